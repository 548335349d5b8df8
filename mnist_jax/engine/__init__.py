"""The engine: train state, pure jitted steps, mesh and sharding, the one
evaluator, checkpoints and the training loop. Imports only `core`."""
