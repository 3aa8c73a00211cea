import pytest

from ..modeling.hf_models import build_reference, save_reference


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory):
    """A small text-classification checkpoint in Hugging Face layout."""
    directory = tmp_path_factory.mktemp("text-ckpt")
    return save_reference(build_reference("PerceiverForSequenceClassification"), directory)
