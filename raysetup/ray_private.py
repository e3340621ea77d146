"""The one place this project touches a private Ray API, each with the reason no public route exists in Ray 2.60.

- `ray._private.worker.print_to_stdstream`: the driver prints every message the raylet publishes ("(raylet) A worker
  died or was killed ...") from a listener thread that ray.init always starts (`listen_error_messages`), whatever
  log_to_driver says; Ray has no setting for it. Without --verbose our commands report failures in their own one-line
  words, so these messages are dropped by wrapping that function.

`check_private_apis()` fails loudly, naming the Ray version, if a name used here disappears (tests/test_raysetup.py).
"""

from __future__ import annotations

PRIVATE_NAMES = {"ray._private.worker": ("print_to_stdstream", "listen_error_messages")}


class RayPrivateApiMissing(RuntimeError):
    pass


def check_private_apis() -> None:
    import importlib

    import ray

    for module_name, names in PRIVATE_NAMES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise RayPrivateApiMissing(f"Ray {ray.__version__} has no module {module_name}; see {__name__}") from None
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            raise RayPrivateApiMissing(
                f"Ray {ray.__version__} lacks {module_name}.{', '.join(missing)}, which {__name__} relies on; "
                f"find the new route for muting raylet messages there"
            )


def mute_raylet_messages() -> None:
    """Drop the raylet's messages from the driver's console (see the module docstring); a no-op if Ray moved it."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_mutes_raylet", False):
        return

    def print_unless_raylet(data, *args, **kwargs):
        if isinstance(data, dict) and data.get("pid") == "raylet":
            return None
        return original(data, *args, **kwargs)

    print_unless_raylet._mutes_raylet = True
    ray_worker.print_to_stdstream = print_unless_raylet
