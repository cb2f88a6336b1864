"""Zoo-style BioImage.IO packages made in the tests (no network: the zoo cannot be reached).

:func:`foreground_boundary_package` packages a small foreign network -- not napari-unet's U-Net --
whose two outputs are a foreground and a boundary map, as the zoo's boundary U-Nets have, with
TorchScript or ``pytorch_state_dict`` weights (its architecture from a Python file in the
package). Its weights are fixed by hand so that it finds bright discs and their rims.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

ARCH_SOURCE = '''
import torch
from torch import nn


class EdgeNet(nn.Module):
    """Foreground = sigmoid(8 (x - 0.5)); boundary = sigmoid(8 (|grad x| - 0.25))."""

    def __init__(self, gain: float = 8.0):
        super().__init__()
        self.gain = gain
        self.smooth = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.grad = nn.Conv2d(1, 2, 3, padding=1, bias=False)

    def forward(self, x):
        s = self.smooth(x)
        g = self.grad(s)
        magnitude = torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2)
        fg = torch.sigmoid(self.gain * (s - 0.5))
        boundary = torch.sigmoid(self.gain * (magnitude - 0.25))
        return torch.cat([fg, boundary], dim=1)
'''


def edge_net() -> nn.Module:
    """The network of :data:`ARCH_SOURCE` with its fixed weights."""
    namespace: dict = {}
    exec(compile(ARCH_SOURCE, "edge_net.py", "exec"), namespace)
    net = namespace["EdgeNet"]()
    with torch.no_grad():
        net.smooth.weight.copy_(torch.full((1, 1, 3, 3), 1 / 9))
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        net.grad.weight.copy_(torch.stack([sobel, sobel.T])[:, None])
    return net.eval()


def discs(shape=(96, 96), centres=((24, 24), (24, 70), (70, 40)), radius=11) -> np.ndarray:
    """A uint16 image of bright, separated discs on a dark background, with noise."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 100.0)
    for r, c in centres:
        image[(rr - r) ** 2 + (cc - c) ** 2 <= radius**2] = 1000.0
    image += np.random.default_rng(0).normal(0, 10, shape)
    return image.astype(np.uint16)


def foreground_boundary_package(
    folder: Path,
    *,
    weights: str = "torchscript",
    import_from: str | None = None,
    channel_names=("foreground", "boundaries"),
    three_d: bool = False,
    description: str = "a foreign network with a foreground and a boundary output",
) -> Path:
    """Write a foreign package zip into ``folder`` and return its path.

    ``weights``: ``"torchscript"`` or ``"pytorch_state_dict"`` (architecture from the file
    ``edge_net.py`` in the package, or ``import_from`` a module when given). ``three_d`` makes
    the input and output (batch, channel, z, y, x).
    """
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    folder.mkdir(parents=True, exist_ok=True)
    net = edge_net()
    side = 64
    image = discs((side, side), centres=((20, 20), (44, 40)), radius=9).astype(np.float32)
    lo, hi = np.percentile(image, [1, 99.8])
    x = (image - lo) / (hi - lo + 1e-6)
    with torch.inference_mode():
        out = net(torch.from_numpy(x[None, None].astype(np.float32))).numpy()
    test_in = image[None, None]
    if three_d:
        test_in, out = test_in[:, :, None], out[:, :, None]
    np.save(folder / "in.npy", test_in)
    np.save(folder / "out.npy", out)
    (folder / "README.md").write_text("# edge net\n\nA foreground and boundary network for tests.\n")
    space = ("z", "y", "x") if three_d else ("y", "x")
    in_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("raw")])]
    in_axes += [
        spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=1 if a == "z" else 16, step=1 if a == "z" else 8))
        for a in space
    ]
    out_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in channel_names])]
    out_axes += [
        spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=2, size=spec.SizeReference(tensor_id=spec.TensorId("input0"), axis_id=spec.AxisId(a)))
        if a != "z"
        else spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(tensor_id=spec.TensorId("input0"), axis_id=spec.AxisId(a)))
        for a in space
    ]
    torch_version = spec.Version(torch.__version__.split("+")[0])
    if weights == "torchscript":
        example = torch.zeros(1, 1, 32, 32)
        torch.jit.trace(net, example).save(str(folder / "edge.pt"))  # convolutions only: any size
        entry = {"torchscript": spec.TorchscriptWeightsDescr(source=folder / "edge.pt", pytorch_version=torch_version)}
    else:
        torch.save(net.state_dict(), folder / "edge_state.pt")
        (folder / "edge_net.py").write_text(ARCH_SOURCE)
        if import_from is None:
            arch = spec.ArchitectureFromFileDescr(source=folder / "edge_net.py", callable=spec.Identifier("EdgeNet"))
        else:
            arch = spec.ArchitectureFromLibraryDescr(import_from=import_from, callable=spec.Identifier("EdgeNet"))
        entry = {
            "pytorch_state_dict": spec.PytorchStateDictWeightsDescr(
                source=folder / "edge_state.pt", architecture=arch, pytorch_version=torch_version
            )
        }
    descr = spec.ModelDescr(
        name="edge net",
        description=description,
        authors=[spec.Author(name="Test Author")],
        cite=[spec.CiteEntry(text="Ronneberger et al. 2015", doi=spec.Doi("10.1007/978-3-319-24574-4_28"))],
        license=spec.LicenseId("MIT"),
        documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[
            spec.InputTensorDescr(
                id=spec.TensorId("input0"),
                axes=in_axes,
                test_tensor=spec.FileDescr(source=folder / "in.npy"),
                preprocessing=[
                    spec.ScaleRangeDescr(
                        kwargs=spec.ScaleRangeKwargs(
                            axes=[spec.AxisId(a) for a in space], min_percentile=1.0, max_percentile=99.8
                        )
                    )
                ],
            )
        ],
        outputs=[
            spec.OutputTensorDescr(
                id=spec.TensorId("output0"), axes=out_axes, test_tensor=spec.FileDescr(source=folder / "out.npy")
            )
        ],
        weights=spec.WeightsDescr(**entry),
    )
    path = folder / f"edge_{weights}{'_3d' if three_d else ''}.zip"
    save_bioimageio_package(descr, output_path=path)
    return path
