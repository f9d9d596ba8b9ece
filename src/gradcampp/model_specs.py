"""Loading a model named on the command line, with its preprocessing and class names.

A model spec is one of:

- ``torchvision:NAME``: a torchvision architecture; weights from ``--weights FILE`` (a state
  dict, loaded without running any code), ``--weights DEFAULT`` (torchvision's download, needs a
  network) or random (``--weights`` left out, for trying the tool). Preprocessing and ImageNet-1k
  class names come from the metadata bundled with torchvision for the architecture's default
  weights.
- ``package.module:callable``: the callable (no arguments) returns a ``torch.nn.Module`` or a
  Keras model; ``--weights FILE`` then loads a state dict into it.
- a ``.keras`` file: a saved Keras model.
- a PyTorch file: a TorchScript archive is recognised and refused (TorchScript modules do not
  support the forward hooks that Grad-CAM needs); a whole pickled module (``torch.save(model)``)
  is loaded only with ``allow_pickle=True``, because unpickling runs code stored in the file.
- ``demo``: the bundled demo network (``gradcampp.demo``); ``demo-fc``: the second one, with a
  flatten + hidden fully connected head.

Files named by the user (model, weights, class names) are opened only when they are regular
files: a FIFO would block and a device such as ``/dev/zero`` never ends. For
``package.module:callable`` only the named module is looked up in the current directory (as
``python -m`` would find it); everything it imports comes from the installed packages, so a
``tqdm.py`` or ``jinja2.py`` lying in the current directory is never run in their place.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._files import NotRegularFileError, check_regular, read_regular
from gradcampp.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess

DEFAULT_SIZE = 224
MAX_CLASS_FILE_BYTES = 64 << 20  # --classes: read whole


def _regular(path: Path, what: str) -> None:
    """ModelSpecError unless ``path`` is a regular file (a missing one: "not found")."""
    try:
        check_regular(path, f"{what} {path}")
    except FileNotFoundError:
        raise ModelSpecError(f"{what} not found: {path}") from None
    except NotRegularFileError as error:
        raise ModelSpecError(str(error)) from None
    except OSError as error:
        raise ModelSpecError(f"cannot open {what} {path}: {error.strerror or error}") from None


class ModelSpecError(ValueError):
    """A model that cannot be loaded: unknown spec, missing file, wrong weights, bad layer."""


class NonFiniteScoresError(ValueError):
    """The model returned NaN or infinite class scores for an input."""


@dataclass
class LoadedModel:
    """A model ready to explain.

    Attributes:
        model: a ``torch.nn.Module`` (on its device, eval mode) or a Keras model.
        preprocess: how images become its inputs.
        classes: class names by output index, or None when unknown.
        description: a short human-readable name for reports.
        framework: ``"torch"`` or ``"keras"``.
        warnings: what the user should know before trusting the maps (e.g. random weights);
            the command line prints them on stderr.
    """

    model: Any
    preprocess: Preprocess
    classes: tuple[str, ...] | None
    description: str
    framework: str
    warnings: list[str] = field(default_factory=list)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` float64 for model inputs ``(N, ...)``.

        Outputs that are already probabilities (non-negative rows summing to 1) are kept; any
        other output is treated as logits and passed through a softmax.

        Raises:
            ModelSpecError: when the model does not return one array of class scores ``(N, K)``
                (e.g. a tuple of outputs).
        """
        if self.framework == "torch":
            import torch

            parameter = next(iter(self.model.parameters()), None)
            device = parameter.device if parameter is not None else "cpu"
            with torch.no_grad():
                outputs = self.model(torch.from_numpy(inputs).to(device))
            _check_scores(outputs, torch.Tensor)
            outputs = outputs.detach().float().cpu().numpy()
        else:
            import keras

            outputs = self.model(inputs, training=False)
            _check_scores(outputs, object)
            # on Keras's torch backend a tensor that requires grad, which np.asarray refuses
            outputs = keras.ops.convert_to_numpy(outputs)
        outputs = np.asarray(outputs, dtype=np.float64)
        if outputs.ndim != 2:
            raise ModelSpecError(
                f"the model must return class scores (N, K), got shape {outputs.shape}"
            )
        if not np.isfinite(outputs).all():
            bad = "NaN" if np.isnan(outputs).any() else "infinite"
            raise NonFiniteScoresError(
                f"the model returned {bad} class scores, so no class probability or map can "
                "be computed"
            )
        sums = outputs.sum(axis=1)
        if outputs.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3):
            return outputs
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def _check_scores(outputs: Any, array_type: type) -> None:
    if isinstance(outputs, (tuple, list, dict)) or not isinstance(outputs, array_type):
        size = f" of {len(outputs)} items" if isinstance(outputs, (tuple, list, dict)) else ""
        raise ModelSpecError(
            f"the model returns a {type(outputs).__name__}{size}, not one tensor of class scores "
            "(N, K); wrap it in a module whose forward returns the logits (e.g. outputs[0])"
        )


def _torch() -> Any:
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without torch
        raise ModelSpecError(
            'PyTorch models need torch: pip install ".[torch]" in a gradcampp checkout'
        ) from error
    return torch


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/__torch__/" in name for name in archive.namelist())


TORCHSCRIPT_MESSAGE = (
    "{what} is a TorchScript module: TorchScript does not support forward hooks "
    "(register_forward_hook raises on ScriptModules), and Grad-CAM needs one to read a layer's "
    "activations and gradients. Explain the original Python model instead: "
    "--model package.module:callable --weights STATE_DICT, or --model torchvision:NAME"
)


def _check_not_torchscript(model: Any, what: str) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.jit.ScriptModule):
        raise ModelSpecError(TORCHSCRIPT_MESSAGE.format(what=what))


def _read_state_dict(path: Path) -> dict[str, Any]:
    torch = _torch()
    _regular(path, "weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelSpecError(
            f"cannot read {path} as a state dict (tensors only; a file holding other Python "
            f"objects is refused because unpickling them runs code): {_first_line(error)}"
        ) from error
    for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ModelSpecError(f"{path} does not hold a state dict (names -> tensors)")
    if state and all(key.startswith("module.") for key in state):  # saved from DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _examples(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def weights_mismatch(model_state: dict[str, Any], state: dict[str, Any]) -> str | None:
    """One line saying how ``state`` fails to fit ``model_state`` (names -> tensors), or None."""
    missing = [name for name in model_state if name not in state]
    unexpected = [name for name in state if name not in model_state]
    shapes = [
        f"{name} {tuple(state[name].shape)} vs {tuple(model_state[name].shape)}"
        for name in model_state
        if name in state and tuple(state[name].shape) != tuple(model_state[name].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing ({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (file vs model: {_examples(shapes, 2)})")
    return "; ".join(parts) or None


def _load_state_dict(model: Any, state: dict[str, Any], path: Path) -> None:
    problem = weights_mismatch(model.state_dict(), state)
    if problem is not None:
        raise ModelSpecError(f"the weights in {path} are for another architecture: {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "RuntimeError"
        raise ModelSpecError(f"the weights in {path} do not fit the model: {first}") from error


def _head_size(model: Any, state: dict[str, Any]) -> int | None:
    """The class count ``state`` gives the model's last 2-D (linear) weight, if it differs."""
    names = [name for name, tensor in model.state_dict().items() if tensor.ndim == 2]
    if not names or names[-1] not in state:
        return None
    rows = int(state[names[-1]].shape[0])
    return rows if rows != int(model.state_dict()[names[-1]].shape[0]) else None


def _resolve_device(device: str) -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError) as error:
        raise ModelSpecError(f"unknown device {device!r}: {error}") from error
    if kind == "meta":
        raise ModelSpecError(
            "--device meta holds no data (shapes only), so nothing can be explained on it; "
            "use cpu, cuda or auto"
        )
    return device


def _torch_loaded(model: Any, device: str, description: str) -> LoadedModel:
    """A user's ``torch.nn.Module`` on ``device`` in eval mode, with ImageNet preprocessing at
    ``DEFAULT_SIZE`` and no class names."""
    return LoadedModel(
        _finish_torch(model, device),
        Preprocess(size=(DEFAULT_SIZE, DEFAULT_SIZE), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        None,
        description,
        "torch",
    )


def _finish_torch(model: Any, device: str) -> Any:
    resolved = _resolve_device(device)
    try:
        return model.to(resolved).eval()
    except Exception as error:  # e.g. CUDA missing: RuntimeError or AssertionError
        raise ModelSpecError(
            f"cannot move the model to device {device!r}: {_first_line(error)}"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _torchvision(name: str, weights: str | None, device: str) -> LoadedModel:
    try:
        import torchvision
    except ImportError as error:
        raise ModelSpecError(
            "torchvision:NAME needs torchvision: pip install torchvision"
        ) from error
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        near = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ModelSpecError(
            f"torchvision has no classification model {name!r}{hint} "
            "(torchvision.models.list_models(module=torchvision.models) lists them)"
        )
    default = torchvision.models.get_model_weights(name).DEFAULT
    transforms = default.transforms()
    crop = int(transforms.crop_size[0])
    resize = int(transforms.resize_size[0])
    preprocess = Preprocess(
        size=(crop, crop),
        resize=resize,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
    )
    categories = tuple(default.meta["categories"])
    notes: list[str] = []
    if weights == "DEFAULT":
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as error:
            raise ModelSpecError(
                f"cannot download torchvision's weights for {name} ({_first_line(error)}); "
                "without a network, pass a local state dict: --weights FILE"
            ) from error
        description = f"torchvision {name} ({default})"
    else:
        model = torchvision.models.get_model(name, weights=None)
        description = f"torchvision {name} (random weights)"
        if weights is None:
            notes.append(
                f"torchvision:{name} runs with random weights (no --weights given): the maps "
                "explain an untrained network; pass --weights FILE or --weights DEFAULT"
            )
        if weights is not None:
            path = Path(weights)
            state = _read_state_dict(path)
            classes = _head_size(model, state)
            if classes is not None:
                model = torchvision.models.get_model(name, weights=None, num_classes=classes)
            _load_state_dict(model, state, path)
            description = f"torchvision {name} ({path.name})"
    n_outputs = _head_rows(model)
    return LoadedModel(
        _finish_torch(model, device),
        preprocess,
        categories if n_outputs in (None, len(categories)) else None,
        description,
        "torch",
        notes,
    )


def _head_rows(model: Any) -> int | None:
    matrices = [t for t in model.state_dict().values() if t.ndim == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _callable(spec: str, weights: str | None, device: str) -> LoadedModel:
    module_name, _, attribute = spec.partition(":")
    try:
        _import_top_level_from_cwd(module_name)
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(
            f"cannot import module {module_name!r} of spec {spec!r}: {error}"
        ) from error
    except BaseException as error:  # the module's own code failed (SyntaxError, any exception)
        if isinstance(error, KeyboardInterrupt):
            raise
        raise ModelSpecError(
            f"importing module {module_name!r} of spec {spec!r} failed: {_first_line(error)}"
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelSpecError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelSpecError(f"{spec} is not callable (got {type(target).__name__})")
    required = _required_parameters(target)
    if required:
        raise ModelSpecError(
            f"{spec} must be callable without arguments, but it needs {', '.join(required)}; "
            "wrap it in a function that passes them"
        )
    try:
        model = target()
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        raise ModelSpecError(f"calling {spec}() failed: {_first_line(error)}") from error
    _check_not_torchscript(model, spec)
    torch = sys.modules.get("torch")
    # Keras first: on Keras's PyTorch backend a Keras model is a torch.nn.Module too
    if torch is not None and isinstance(model, torch.nn.Module) and not _is_keras(model):
        if weights is not None:
            path = Path(weights)
            _load_state_dict(model, _read_state_dict(path), path)
        return _torch_loaded(model, device, spec)
    if _is_keras(model):
        if weights is not None:
            try:
                model.load_weights(weights)
            except Exception as error:
                raise ModelSpecError(
                    f"cannot load the Keras weights {weights}: {_first_line(error)}"
                ) from error
        return _keras_loaded(model, spec)
    raise ModelSpecError(
        f"{spec} returned {type(model).__name__}, not a torch.nn.Module or a Keras model"
    )


def _import_top_level_from_cwd(module_name: str) -> None:
    """Import the top-level package of ``module_name`` from the current directory, if it is there.

    Only that one name is looked up in the current directory (``sys.path`` is left as it is), so
    that ``--model mymodels:make`` finds ``./mymodels.py`` while the modules it imports, and
    gradcampp's own, come from the installed packages.
    """
    top = module_name.split(".")[0]
    if top in sys.modules:
        return
    found = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
    if found is None or found.loader is None:
        return  # not in the current directory: the normal import finds it, or says why not
    module = importlib.util.module_from_spec(found)
    sys.modules[top] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise


def _required_parameters(function: Any) -> list[str]:
    """Names of the parameters ``function`` cannot be called without ([] when unknown)."""
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
    ]


def _is_keras(model: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def _keras_loaded(model: Any, description: str) -> LoadedModel:
    shape = tuple(model.input_shape)
    size = shape[1:3] if len(shape) == 4 and None not in shape[1:3] else (DEFAULT_SIZE,) * 2
    outputs = model.output_shape[-1]
    # keras.applications classifiers: ImageNet-1k, in the same order as torchvision's list
    classes = imagenet_categories() if outputs == 1000 else None
    return LoadedModel(
        model, Preprocess(size=tuple(size), channels_last=True), classes, description, "keras"
    )


def imagenet_categories() -> tuple[str, ...] | None:
    """The 1000 ImageNet-1k class names bundled with torchvision, or None without torchvision.

    Read from torchvision's metadata file without importing torchvision, so that this also works
    in a process that has loaded TensorFlow (in some builds, importing torchvision after
    TensorFlow crashes the process).
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    meta = Path(spec.origin).parent / "models" / "_meta.py"
    try:
        tree = ast.parse(meta.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_IMAGENET_CATEGORIES"
            for target in node.targets
        ):
            names = ast.literal_eval(node.value)
            return tuple(names) if len(names) == 1000 else None
    return None


def _keras_file(path: Path) -> LoadedModel:
    try:
        import keras
    except ImportError as error:
        raise ModelSpecError(f"{path} is a Keras model; install keras to load it") from error
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ModelSpecError(f"cannot load the Keras model {path}: {_first_line(error)}") from error
    return _keras_loaded(model, path.name)


def _torch_file(path: Path, weights: str | None, allow_pickle: bool, device: str) -> LoadedModel:
    torch = _torch()
    if _is_torchscript(path):
        raise ModelSpecError(TORCHSCRIPT_MESSAGE.format(what=str(path)))
    if not allow_pickle:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise ModelSpecError(
                f"{path} holds pickled Python objects (e.g. a whole module saved with "
                "torch.save(model)); loading a pickle runs code stored in the file. If you "
                "trust it, pass --allow-pickle"
            ) from None
        raise ModelSpecError(
            f"{path} holds tensors only (a state dict); name the architecture with "
            f"--model torchvision:NAME --weights {path} or --model package.module:callable "
            f"--weights {path}"
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ModelSpecError(f"cannot unpickle {path}: {_first_line(error)}") from error
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_state_dict(model, _read_state_dict(Path(weights)), Path(weights))
    return _torch_loaded(model, device, path.name)


def _demo(device: str, head: str = "gap") -> LoadedModel:
    try:
        import torch  # noqa: F401  (the demo networks are PyTorch modules)

        from gradcampp.demo import CLASSES, load_demo_model
    except ImportError as error:
        raise ModelSpecError(
            f"the demo network needs {error.name or 'its extra dependencies'}, which is not "
            'installed: pip install ".[demo]" in a gradcampp checkout (the "demo" extra)'
        ) from error
    return LoadedModel(
        _finish_torch(load_demo_model(head), device),
        Preprocess(size=(64, 64)),
        tuple(CLASSES),
        "gradcampp demo network" + (" (fully connected head)" if head == "fc" else ""),
        "torch",
    )


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names from a text file (one per line) or a JSON list."""
    file = Path(path)
    try:
        text = read_regular(file, MAX_CLASS_FILE_BYTES, f"class names file {file}").decode("utf-8")
    except FileNotFoundError:
        raise ModelSpecError(f"class names file not found: {file}") from None
    except UnicodeDecodeError as error:
        raise ModelSpecError(
            f"class names file {file} is not UTF-8 text ({error.reason})"
        ) from error
    except NotRegularFileError as error:
        raise ModelSpecError(str(error)) from None
    except OSError as error:
        raise ModelSpecError(f"cannot read class names file {file}: {error.strerror}") from error
    if file.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelSpecError(
                f"class names file {file} is not valid JSON: {error.msg} (line {error.lineno}, "
                f"column {error.colno})"
            ) from error
        if not isinstance(names, list):
            raise ModelSpecError(
                f"class names file {file} must hold a JSON list of names, got a "
                f"{type(names).__name__}"
            )
        return tuple(str(name) for name in names)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> LoadedModel:
    """Load the model named by ``spec`` (see the module docstring).

    Args:
        spec: ``torchvision:NAME``, ``package.module:callable``, ``demo`` or a model file path.
        weights: a state-dict file, ``"DEFAULT"`` (torchvision only), or None.
        allow_pickle: allow unpickling a whole module from a file (runs code from the file).
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...) or ``"auto"``.

    Raises:
        ModelSpecError: with a message saying what is wrong and what would work.
    """
    if weights == "DEFAULT" and not spec.startswith("torchvision:"):
        raise ModelSpecError("--weights DEFAULT is only meaningful for torchvision:NAME models")
    if spec in ("demo", "demo-fc"):
        if weights is not None:
            raise ModelSpecError(
                f"--weights is not used with --model {spec} (the demo network ships its own); "
                "leave it out"
            )
        return _demo(device, "fc" if spec == "demo-fc" else "gap")
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1], weights, device)
    path = Path(spec)
    if path.suffix.lower() == ".keras":
        if weights is not None:
            raise ModelSpecError(
                f"--weights is not used with a .keras file ({path.name} holds its own weights); "
                "leave it out"
            )
        _regular(path, "model file")
        return _keras_file(path)
    if path.exists():
        if path.is_dir():
            raise ModelSpecError(f"{path} is a directory, not a model file")
        _regular(path, "model file")
        return _torch_file(path, weights, allow_pickle, device)
    if ":" in spec and not spec.startswith(("/", ".")):
        module_name, _, attribute = spec.partition(":")
        if module_name and attribute and all(p.isidentifier() for p in module_name.split(".")):
            return _callable(spec, weights, device)
    if path.suffix.lower() in (".pt", ".pth", ".ts", ".pkl", ".bin", ".jit"):
        raise ModelSpecError(f"model file not found: {path}")
    raise ModelSpecError(
        f"unknown model spec {spec!r}: expected torchvision:NAME, package.module:callable, "
        "demo, demo-fc, or the path of a .keras / TorchScript / pickled PyTorch file"
    )
