"""The model session shared by the widgets of one viewer (plain Python, no viewer needed)."""

from napari_unet._qt._session import ModelEntry, Session
from napari_unet.engine.model import UNet, UNetConfig


def test_a_network_is_a_model_not_a_factory():
    net = UNet(UNetConfig(depth=1, base_channels=2))
    assert callable(net)
    assert ModelEntry("net", net, kind="fine-tuned").resolve() is net


def test_a_factory_is_called_once():
    calls = []

    def factory():
        calls.append(1)
        return "default"

    entry = ModelEntry("lazy", factory)
    assert entry.resolve() == "default"
    assert entry.resolve() == "default"
    assert calls == [1]


def test_set_current_tells_the_widgets_and_remembers_the_fine_tuned_model():
    session = Session()
    seen = []
    session.changed.connect(seen.append)
    tuned = ModelEntry("fine-tuned (step 5)", "x.pt", kind="fine-tuned", step=5)
    session.set_current(tuned)
    assert seen == [tuned]
    assert session.entries() == [session.default, tuned]
    session.set_current(session.default)
    assert session.fine_tuned is tuned and session.current is session.default
