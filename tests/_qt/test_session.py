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


def test_a_model_that_cannot_be_loaded_falls_back_to_the_one_before():
    session = Session()
    first = ModelEntry("a.pt", "a.pt", kind="file")
    broken = ModelEntry("broken.pt", "broken.pt", kind="file")
    session.set_current(first)
    session.set_current(broken)
    assert session.fall_back(broken) is first and session.current is first
    assert session.fall_back(broken) is None and session.current is first  # no longer current
    # nothing before it: the bundled default; the default itself has nothing to fall back to
    lone = Session()
    lone.set_current(broken)
    assert lone.fall_back(broken) is lone.default and lone.current is lone.default
    assert lone.fall_back(lone.default) is None and lone.current is lone.default
