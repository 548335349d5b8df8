"""Studies: points x seeds trained through the engine, results read back from
run directories, statistics, tables, plots and reports. The spec, statistics
and table formatting never import JAX."""
