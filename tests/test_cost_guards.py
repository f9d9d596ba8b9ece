"""Guards on the cost of explaining (not timed): what the design promises about work done.

- No parameter gets a gradient: ``.grad`` stays as the user left it (``None`` or their values).
- No autograd graph is recorded before the explained layer: the outputs of the layers up to it
  carry no ``grad_fn``, and no tensor of theirs is saved for a backward pass.
- Several targets (``TopK``, ``Classes``) cost one forward pass, not one per target.

The timings these guards protect are measured by ``benchmarks/speed.py``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from gradcampp import GradCAM, GradCAMPP  # noqa: E402
from gradcampp.targets import Classes, TopK  # noqa: E402

EXPLAINERS = [GradCAMPP, GradCAM]


class Net(nn.Module):
    """stem (conv, ReLU) -> body (conv, ReLU) -> head (pool, flatten, linear), 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


def images(n: int = 3, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def count_forwards(module: nn.Module) -> list[int]:
    """A one-element counter of ``module``'s forward calls (the hook stays: test models only)."""
    calls = [0]

    def pre_hook(module: nn.Module, args: object) -> None:
        calls[0] += 1

    module.register_forward_pre_hook(pre_hook)
    return calls


@pytest.mark.parametrize("explainer", EXPLAINERS)
@pytest.mark.parametrize("targets", [None, TopK(3), Classes([0, 4])])
def test_no_parameter_gets_a_gradient(explainer, targets):
    model = make_net()
    params = list(model.parameters())
    # The user's own gradients on half of the parameters; the others have none.
    users = {}
    for i, param in enumerate(params):
        if i % 2 == 0:
            param.grad = torch.full_like(param, float(i + 1))
            users[i] = param.grad
    explainer(model, conv_layer="body").explain(images(), targets)
    for i, param in enumerate(params):
        if i in users:
            assert param.grad is users[i]  # the same tensor object...
            assert torch.equal(param.grad, torch.full_like(param, float(i + 1)))  # ...unchanged
        else:
            assert param.grad is None
        assert param.requires_grad


@pytest.mark.parametrize("explainer", EXPLAINERS)
def test_no_graph_is_recorded_before_the_layer(explainer):
    model = make_net()
    has_graph: dict[str, bool] = {}

    def record(name: str):
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            has_graph[name] = output.grad_fn is not None or output.requires_grad

        return hook

    # Registered before the explainer's own hook, so each sees the module's raw output.
    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(record(name))
    explainer(model, conv_layer="body").explain(images(), TopK(2))
    before = ["stem", "stem.0", "stem.1", "body", "body.0", "body.1"]
    after = ["head", "head.0", "head.1", "head.2"]
    assert {name: has_graph[name] for name in before} == dict.fromkeys(before, False)
    # The head is where the gradient comes from, so it does record a graph.
    assert {name: has_graph[name] for name in after} == dict.fromkeys(after, True)


@pytest.mark.parametrize("explainer", EXPLAINERS)
def test_only_the_head_saves_tensors_for_backward(explainer):
    """Tensors kept for a backward pass: none of the input's or the stem's size (8x8 maps)."""
    model = make_net()
    saved: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        explainer(model, conv_layer="body").explain(images(n=3), TopK(2))
    assert saved  # the head did record its graph...
    # ...and only the head: the body's output is 4x4, the stem's 8x8, the input 8x8.
    assert all(shape[-2:] != (8, 8) for shape in saved), saved
    assert not any(shape == (6, 4, 3, 3) or shape == (4, 3, 3, 3) for shape in saved), saved


@pytest.mark.parametrize("explainer", EXPLAINERS)
@pytest.mark.parametrize(
    ("targets", "n_targets"), [(TopK(5), 5), (Classes([0, 1, 2, 3]), 4), (Classes([[0, 4]] * 3), 2)]
)
def test_several_targets_cost_one_forward_pass(explainer, targets, n_targets):
    model = make_net()
    model_calls = count_forwards(model)
    stem_calls = count_forwards(model.stem)
    head_calls = count_forwards(model.head)
    maps = explainer(model, conv_layer="body").explain(images(n=3), targets)
    assert model_calls == [1]
    assert stem_calls == [1]
    assert head_calls == [1]
    assert tuple(maps.shape) == (3, n_targets, 8, 8)


def test_layer_probe_runs_once_per_input_shape():
    """Without ``conv_layer`` the layer is found by one probing pass on one sample, then cached."""
    model = make_net()
    calls = count_forwards(model)
    batch_sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    cam = GradCAMPP(model)
    cam.explain(images(n=3), TopK(5))
    assert calls == [2]  # the probe and the explained pass
    assert batch_sizes == [1, 3]
    cam.explain(images(n=3, seed=2), TopK(5))
    assert calls == [3]  # same input shape: no new probe
    cam.explain(images(n=2, size=10), TopK(5))
    assert calls == [5]  # new spatial size: probed again
    assert batch_sizes == [1, 3, 3, 1, 2]


def test_one_forward_pass_per_chunk():
    model = make_net()
    batch_sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    GradCAMPP(model, conv_layer="body", batch_size=2).explain(images(n=5), TopK(4))
    assert batch_sizes == [2, 2, 1]


@pytest.mark.slow
def test_resnet_graph_starts_at_the_explained_layer():
    """On torchvision's ResNet-18: only ``avgpool`` and ``fc`` record a graph; one forward pass."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with_graph: list[str] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, args: object, output: torch.Tensor) -> None:
        if output.grad_fn is not None:
            with_graph.append(names[module])

    for module in model.modules():
        if module is not model:
            module.register_forward_hook(record)
    calls = count_forwards(model)
    GradCAMPP(model, conv_layer="layer4").explain(images(n=2, size=64), TopK(5))
    assert with_graph == ["avgpool", "fc"]
    assert calls == [1]
    assert all(param.grad is None for param in model.parameters())
