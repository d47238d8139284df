"""Settings survive a save/load round trip with their types, and the dialog edits them."""

from qgis.core import QgsSettings


def test_settings_round_trip_keeps_types(plugin_package, qgis_app):
    from socioreasoner.ui.settings import PREFIX, EngineSettings

    QgsSettings().remove(PREFIX.rstrip("/"))
    s = EngineSettings(vlm="/models/socio", device="cpu", sampling=True, offline=False,
                       max_new_tokens=321, timeout_s=77, extra={"vlm": "scripted"})
    s.save()
    back = EngineSettings.load()
    assert (back.vlm, back.device, back.max_new_tokens, back.timeout_s) == ("/models/socio", "cpu", 321, 77)
    assert back.sampling is True and back.offline is False       # booleans, not "false" strings
    assert back.extra == {}                                       # test hooks are never stored
    spec = back.model_spec()
    assert spec["generation"] == {"max_new_tokens": 321, "do_sample": True, "temperature": 0.99,
                                  "top_p": 0.99, "top_k": 100}
    QgsSettings().remove(PREFIX.rstrip("/"))


def test_settings_dialog_applies_and_stores(plugin_package, qgis_app):
    from socioreasoner.ui.settings import PREFIX, EngineSettings
    from socioreasoner.ui.settings_dialog import SettingsDialog

    QgsSettings().remove(PREFIX.rstrip("/"))
    s = EngineSettings()
    dialog = SettingsDialog(s)
    dialog.vlm.setText("/data/my-model")
    dialog.segmenter.setCurrentText("sam")
    dialog.device.setCurrentText("cpu")
    dialog.sampling.setChecked(True)
    dialog.max_tokens.setValue(512)
    dialog.tile_batch.setValue(8)
    dialog.vlm_backend.setCurrentText("vllm")
    dialog.apply()
    assert (s.vlm, s.segmenter, s.device, s.sampling, s.max_new_tokens) == (
        "/data/my-model", "sam", "cpu", True, 512)
    assert EngineSettings.load().model_spec()["vlm_backend"] == "vllm"     # reaches the worker
    assert EngineSettings.load().vlm == "/data/my-model" and EngineSettings.load().tile_batch == 8
    QgsSettings().remove(PREFIX.rstrip("/"))


def test_auto_tile_batch_follows_the_loaded_device(plugin_package, qgis_app):
    """Tiles per batch 0 (the default, shown as "auto") batches on a GPU only, where it
    pays; a number set by the user is kept whatever the device."""
    from socioreasoner.ui.session import GPU_TILE_BATCH, EngineSession, SharedWorker
    from socioreasoner.ui.settings import EngineSettings
    from socioreasoner.ui.settings_dialog import SettingsDialog

    assert EngineSettings().tile_batch == 0 and GPU_TILE_BATCH > 1
    assert SettingsDialog(EngineSettings()).tile_batch.text() == "auto"
    worker = SharedWorker()         # loaded_device is what the worker's load reply said
    auto = EngineSession(EngineSettings(), worker)
    fixed = EngineSession(EngineSettings(tile_batch=3), worker)
    for device, expected in ((None, 1), ("cpu", 1), ("cuda:0", GPU_TILE_BATCH)):
        worker.loaded_device = device
        assert (auto.tile_batch(), fixed.tile_batch()) == (expected, 3), device


def test_tile_batch_saved_before_auto_existed_reads_as_auto(plugin_package, qgis_app):
    """Settings saved by an earlier version hold tile_batch 1, its default then: auto now;
    a 1 saved since is the user's choice and stays."""
    from socioreasoner.ui.settings import PREFIX, EngineSettings

    QgsSettings().remove(PREFIX.rstrip("/"))
    QgsSettings().setValue(PREFIX + "tile_batch", 1)          # as the old save() left it
    QgsSettings().setValue(PREFIX + "vlm", "/models/old")
    old = EngineSettings.load()
    assert (old.tile_batch, old.vlm) == (0, "/models/old")
    EngineSettings(tile_batch=1).save()
    assert EngineSettings.load().tile_batch == 1
    QgsSettings().remove(PREFIX.rstrip("/"))


def test_the_weights_field_follows_the_segmenter_kind(plugin_package, qgis_app):
    """The weights field is empty by default (sam2's default weights; no SAM2 hub id is
    left for SAM to fail on); switching kinds says what each wants and keeps typed weights."""
    from socioreasoner.ui.settings import EngineSettings
    from socioreasoner.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(EngineSettings())
    dialog.segmenter.setCurrentText("sam")
    assert dialog.checkpoint.text() == "" and ".pth" in dialog.checkpoint.placeholderText()
    dialog.segmenter.setCurrentText("sam2")
    assert dialog.checkpoint.text() == EngineSettings().segmenter_checkpoint
    dialog.checkpoint.setText("/models/sam2_finetune.pt")
    dialog.segmenter.setCurrentText("sam")
    assert dialog.checkpoint.text() == "/models/sam2_finetune.pt"
