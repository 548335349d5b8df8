"""Process set-up that must happen before JAX starts its backends.

The CLI calls these before anything touches a device: XLA reads XLA_FLAGS
once, when the first backend starts, `jax.distributed.initialize` must run
before any computation, and the compilation cache must be set before the
first compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
import warnings
from typing import List, Optional

from mnist_jax.core.errors import UserError

GPU_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops"
YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CACHE_DIR_ENV = "MNIST_JAX_CACHE_DIR"
COMPILATION_CACHE_ENV = "MNIST_JAX_COMPILATION_CACHE"  # "0": off


def cache_home() -> str:
  """Where this project keeps what it can rebuild: $MNIST_JAX_CACHE_DIR, else
  $XDG_CACHE_HOME/mnist_jax, else ~/.cache/mnist_jax.

  Deleting it is always safe: it holds the decoded MNIST arrays (core/data.py)
  and compiled XLA programs (enable_compilation_cache).
  """
  if os.environ.get(CACHE_DIR_ENV):
    return os.environ[CACHE_DIR_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mnist_jax")


def enable_compilation_cache() -> Optional[str]:
  """Keeps every compiled XLA program on disk; returns the folder (None: off).

  A process that compiles a program compiled before (same program, flags,
  jax and backend) reads it back instead. The
  folder is $JAX_COMPILATION_CACHE_DIR if set (JAX's own variable), else
  cache_home()/jax; MNIST_JAX_COMPILATION_CACHE=0 turns it off. Programs of
  any compile time are kept (JAX's default keeps only those over 1 s; the
  eager model initialisation alone compiles dozens of small ones, and this
  project's steps take 0.1-2 s on the 2-core CPU). Measured in
  docs/performance.md ("Fixed costs of a command").
  """
  if os.environ.get(COMPILATION_CACHE_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
    return None
  import jax
  folder = jax.config.jax_compilation_cache_dir or os.path.join(cache_home(), "jax")
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return folder


def set_gpu_determinism(enabled: bool) -> None:
  """Asks XLA for deterministic GPU kernels (same inputs, same bits) if `enabled`.

  Without it, GPU reductions (e.g. scatter-adds in gradients) may sum in a
  different order each run. It costs some speed, so it can be switched off.
  A value already in XLA_FLAGS wins. CPU builds accept and ignore the flag.
  """
  _add_xla_flag(GPU_DETERMINISTIC_FLAG, "true" if enabled else "false")


def _add_xla_flag(name: str, value: str) -> bool:
  """Appends `name=value` to XLA_FLAGS unless XLA_FLAGS already sets `name`
  (the user's value wins); True if it was added."""
  flags = os.environ.get("XLA_FLAGS", "")
  if name in flags:
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {name}={value}".strip()
  return True


def setup_xla() -> None:
  """The XLA settings every entry point compiles with (XLA:CPU's Eigen
  convolutions, use_eigen_cpu_convolutions); call it before JAX starts its
  backends. Every command calls it when it starts; a Python user calls it
  first thing (`mnist_jax.setup_xla()`) to get the command line's programs
  and bits."""
  use_eigen_cpu_convolutions()


def use_eigen_cpu_convolutions() -> None:
  """Asks XLA:CPU for its Eigen convolutions rather than YNNPACK's, before JAX starts.

  On this project's CPU (jaxlib 0.10.2) YNNPACK ran these small-image
  convolutions at a fraction of Eigen's speed (the speedrun's 12x12x24->32
  forward 4.6 ms against 1.5 ms; a training step of the default CNN +41-65%,
  of the speedrun +37-41%, evaluation 1.7-1.9x: docs/decisions.md,
  "XLA:CPU's Eigen convolutions rather than YNNPACK's"). YNNPACK keeps the dots, elementwise ops and
  reductions. The same function summed in another order, so the bits differ
  from a run compiled with YNNPACK's convolutions.

  `setup_xla` calls this, and every entry point (the CLI, the tools' and
  experiments' scripts, Ray workers, the tests, a notebook through
  `mnist_jax.setup_xla()`) calls that, so all compile the same kernels and a
  run gives the same bits wherever it is resumed or evaluated. A value already in XLA_FLAGS wins:
  `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`
  gives XLA's default (YNNPACK's convolutions, with which RESULTS.md's
  studies and the frontier runs were compiled). Older jaxlib builds, which do not know the flag (XLA stops a
  process at an unknown flag), are left alone, as are GPU and TPU backends,
  which ignore it.
  """
  # "-individual_convolution": YNNPACK's default set, less its convolutions.
  if not _jaxlib_has_ynn_flag() or not _add_xla_flag(YNN_FUSION_FLAG,
                                                     "-individual_convolution"):
    return
  if _backends_started():
    warnings.warn("JAX started its backends before mnist_jax.setup_xla(), so its CPU "
                  "convolutions stay YNNPACK's (slower here, other bits than the "
                  "CLI's runs): call mnist_jax.setup_xla() before using JAX.",
                  stacklevel=3)


def _jaxlib_has_ynn_flag() -> bool:
  """jaxlib >= 0.10 (read from the package metadata: jaxlib is not imported)."""
  from importlib import metadata
  try:
    major, minor = (int(part) for part in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return (major, minor) >= (0, 10)


def init_multihost(coordinator_address: Optional[str] = None,
                   num_processes: Optional[int] = None,
                   process_id: Optional[int] = None) -> None:
  """Joins this process to a multi-process JAX run.

  On a TPU pod slice, or under SLURM / Open MPI, JAX finds all three values
  itself; elsewhere (e.g. several processes on one machine) pass them. Where
  JAX finds no cluster and none is given, it raises ValueError ("coordinator_address
  should be defined", measured on one machine): a UserError here.
  """
  import jax
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except (ValueError, RuntimeError) as e:
    raise UserError(f"--multihost could not join a multi-process run "
                    f"({' '.join(str(e).split())}): on one machine drop --multihost; "
                    "elsewhere pass --coordinator_address host:port, --num_processes "
                    "and --process_id.") from None


def device_memory_bytes() -> int:
  """Memory one training copy of a model can use: the limit of this process's
  first device (GPU, TPU; another process's devices report nothing here), else
  the host's available memory (Linux's MemAvailable, which counts reclaimable
  caches; else all its memory)."""
  import jax
  stats = jax.local_devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# XLA_FLAGS already checked in this process (a check runs a child process).
_CHECKED_XLA_FLAGS = set()


def check_xla_flags() -> None:
  """A UserError if XLA cannot parse XLA_FLAGS: XLA stops the process (a fatal
  log line, SIGABRT) when its first backend starts, so a child process asks
  XLA first, and only where XLA_FLAGS holds more than this project's own
  flags (a user's) and no backend has started yet."""
  value = os.environ.get("XLA_FLAGS", "")
  users = " ".join(_user_xla_flags(value))
  if value in _CHECKED_XLA_FLAGS or not users or _backends_started():
    return
  not_flags = [word for word in value.split() if not word.startswith("--")]
  if not_flags:
    raise UserError(f"XLA_FLAGS={users!r}: {not_flags[0]!r} is no flag; XLA takes "
                    "--name=value words: correct or unset XLA_FLAGS.")
  probe = subprocess.run([sys.executable, "-c", "from jaxlib import xla_client; "
                          "xla_client.CompileOptions()"],  # parses XLA_FLAGS
                         capture_output=True, text=True, env=dict(os.environ))
  if probe.returncode != 0:
    lines = [line for line in probe.stderr.splitlines() if "XLA_FLAGS" in line]
    why = (lines or probe.stderr.splitlines() or ["XLA stopped"])[-1].split("] ", 1)[-1]
    raise UserError(f"XLA_FLAGS={users!r} stops XLA ({why.strip()}): correct or unset "
                    "XLA_FLAGS.")
  _CHECKED_XLA_FLAGS.add(value)


def _user_xla_flags(value: str) -> List[str]:
  """The words of XLA_FLAGS that this project did not add."""
  ours = {f"{YNN_FUSION_FLAG}=-individual_convolution",
          f"{GPU_DETERMINISTIC_FLAG}=true", f"{GPU_DETERMINISTIC_FLAG}=false"}
  return [word for word in value.split() if word not in ours]


def _backends_started() -> bool:
  bridge = sys.modules.get("jax._src.xla_bridge")
  return bridge is not None and bridge.backends_are_initialized()


def platform_error(error: Exception) -> Optional[UserError]:
  """JAX's error for a platform it cannot start (JAX_PLATFORMS=gpu on a
  machine without one: a RuntimeError, or for 'cuda' an AssertionError) as
  one line; None for any other error."""
  if not _raised_starting_backends(error):
    return None
  import jax
  wanted = jax.config.jax_platforms
  text = " ".join(str(error).split())
  if isinstance(error, RuntimeError) and text.startswith("Unable to initialize backend"):
    why = text.split(" (set JAX_PLATFORMS=")[0].split(" (you may need")[0]
  elif isinstance(error, AssertionError) and wanted:
    why = "no device of it is visible"
  else:
    return None
  if not wanted:
    return UserError(f"JAX cannot start its platforms ({why}): set JAX_PLATFORMS=cpu, "
                     "or uninstall the plugin package that fails.")
  return UserError(f"JAX_PLATFORMS={wanted} names a platform JAX cannot start here "
                   f"({why}): set JAX_PLATFORMS to one this machine has (e.g. cpu), "
                   "or unset it to let JAX choose.")


def _raised_starting_backends(error: Exception) -> bool:
  """Whether `error` came from JAX starting its backends, which did not start."""
  frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
  return (bool(frames) and frames[-1].f_code.co_filename.endswith("xla_bridge.py")
          and not _backends_started())
