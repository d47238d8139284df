"""The settings dialog: engine Python, models, device and sampling."""

from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
)


def tr(text):
    return QCoreApplication.translate("SocioReasoner", text)


class SettingsDialog(QDialog):
    """Edits an ``EngineSettings`` in place when accepted."""

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("SocioReasonerSettingsDialog")
        self.setWindowTitle(tr("SocioReasoner settings"))
        self.settings = settings
        form = QFormLayout(self)
        self.python = QLineEdit(settings.engine_python)
        self.python.setPlaceholderText(settings.python_path())
        self.vlm = QLineEdit(settings.vlm)
        self.vlm_backend = QComboBox()
        self.vlm_backend.addItems(["transformers", "vllm"])
        self.vlm_backend.setCurrentText(settings.vlm_backend)
        self.vlm_backend.setToolTip(tr("vllm: faster batches of tiles on a CUDA GPU, with an "
                                       "engine Python that has vLLM installed (experimental)"))
        self.segmenter = QComboBox()
        self.segmenter.addItems(["sam2", "sam"])
        self.segmenter.setCurrentText(settings.segmenter)
        self.checkpoint = QLineEdit(settings.segmenter_checkpoint)
        self.variant = QLineEdit(settings.segmenter_variant)
        self._show_checkpoint_kind(settings.segmenter)
        self.segmenter.currentTextChanged.connect(self._show_checkpoint_kind)
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "mps", "cpu"])
        self.device.setCurrentText(settings.device)
        self.mode = QComboBox()
        self.mode.addItems(["two-stage", "stage1", "single"])
        self.mode.setCurrentText(settings.mode)
        self.sampling = QCheckBox(tr("Sample like the paper's training (otherwise greedy)"))
        self.sampling.setChecked(settings.sampling)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(16, 4096)
        self.max_tokens.setValue(settings.max_new_tokens)
        self.timeout = QSpinBox()
        self.timeout.setRange(10, 24 * 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(settings.timeout_s)
        self.tile_batch = QSpinBox()
        self.tile_batch.setRange(0, 64)
        self.tile_batch.setSpecialValueText(tr("auto"))      # shown for 0
        self.tile_batch.setValue(settings.tile_batch)
        self.tile_batch.setToolTip(tr("Tiles per model batch in large views. Auto: 4 when the "
                                      "model runs on a GPU, 1 on a CPU (batches only pay off on "
                                      "GPUs; 8-16 are faster still where GPU memory allows)."))
        self.offline = QCheckBox(tr("Offline: use only downloaded weights"))
        self.offline.setChecked(settings.offline)
        hint = QLabel(tr("The engine runs in its own Python environment (build it with "
                         "'make setup' in the plugin folder); QGIS never loads the models itself."))
        hint.setWordWrap(True)
        form.addRow(hint)
        form.addRow(tr("Engine Python"), self.python)
        form.addRow(tr("Vision-language model"), self.vlm)
        form.addRow(tr("VLM backend"), self.vlm_backend)
        form.addRow(tr("Segmenter"), self.segmenter)
        form.addRow(tr("Segmenter weights"), self.checkpoint)
        form.addRow(tr("Segmenter variant"), self.variant)
        form.addRow(tr("Device"), self.device)
        form.addRow(tr("Mode"), self.mode)
        form.addRow(self.sampling)
        form.addRow(tr("Max answer tokens"), self.max_tokens)
        form.addRow(tr("Timeout per request"), self.timeout)
        form.addRow(tr("Tiles per batch"), self.tile_batch)
        form.addRow(self.offline)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _show_checkpoint_kind(self, kind):
        """What the weights field wants: empty keeps sam2's default, sam needs its file."""
        self.checkpoint.setPlaceholderText(
            tr("path to a SAM checkpoint, e.g. sam_vit_h_4b8939.pth") if kind == "sam"
            else tr("default: facebook/sam2-hiera-large; or a hub id, folder or .pt file"))

    def apply(self):
        """Copy the widgets' values into the settings and store them."""
        s = self.settings
        s.engine_python = self.python.text().strip()
        s.vlm = self.vlm.text().strip() or s.vlm
        s.vlm_backend = self.vlm_backend.currentText()
        s.segmenter = self.segmenter.currentText()
        s.segmenter_checkpoint = self.checkpoint.text().strip()
        s.segmenter_variant = self.variant.text().strip()
        s.device = self.device.currentText()
        s.mode = self.mode.currentText()
        s.sampling = self.sampling.isChecked()
        s.max_new_tokens = self.max_tokens.value()
        s.timeout_s = self.timeout.value()
        s.tile_batch = self.tile_batch.value()
        s.offline = self.offline.isChecked()
        s.save()
