"""`autospec distill` on a tiny target saved as a local checkpoint: builds, trains, saves, reloads, refuses."""
import json
import shutil

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from autospec.entrypoints.cli import main
from autospec.backends.draft_model import DraftCheckpointError, DraftLM, load_draft
from tests.backends.tiny_models import tiny_llama

WORDS = ["<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(94)]


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    """A tiny Llama + word-level tokenizer with a chat template, saved like a real checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-target")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{% for m in messages %}w1 w2 {{ m['content'] }} w3{% endfor %}"
    fast.save_pretrained(folder)
    tiny_llama(layers=3, seed=0, vocab=len(WORDS)).save_pretrained(folder)
    return folder


def test_draft_shares_the_targets_vocabulary_and_head():
    target = tiny_llama(layers=3, vocab=97)
    draft = DraftLM(target, 1, torch.tensor([2, 5, 7]))
    logits = draft(input_ids=torch.tensor([[3, 4, 5]]), use_cache=False).logits
    assert logits.shape == (1, 3, 97)
    allowed = torch.isfinite(logits[0, 0]).nonzero().flatten().tolist()
    assert allowed == [2, 5, 7]
    assert "embed_tokens.weight" not in draft.trainable_state() and any("layers.0" in k for k in draft.trainable_state())
    with pytest.raises(ValueError, match="num_layers must be in 1..2"):
        DraftLM(target, 3)


def test_distill_trains_saves_and_reloads_offline(target_dir, tmp_path):
    out = tmp_path / "draft"
    assert main(["distill", "--target", str(target_dir), "--out", str(out), "--layers", "1", "--tokens", "300",
                 "--new-tokens", "8", "--samples", "1", "--vocab-size", "40", "--epochs", "2", "--batch-size", "8",
                 "--eval-tokens", "4", "--dtype", "float32", "--checkpoint-every", "2"]) == 0
    config = json.loads((out / "draft_config.json").read_text())
    training = config["training"]
    assert training["steps"] > 0 and training["data_tokens"] >= 300
    assert 0.0 <= training["heldout_teacher_forced"]["overall"] <= 1.0
    assert set(training["heldout_decoding"]["per_category"]) == {"chat", "code", "math", "qa", "rewrite", "summarize"}
    assert (out / "checkpoint.pt").exists() and config["vocab_subset_size"] >= 40
    from transformers import AutoModelForCausalLM
    target = AutoModelForCausalLM.from_pretrained(target_dir, local_files_only=True)
    draft = load_draft(target, out)
    assert draft(input_ids=torch.tensor([[3, 4]]), use_cache=False).logits.shape[-1] == len(WORDS)
    # resume continues from the checkpoint (more epochs -> more steps)
    assert main(["distill", "--target", str(target_dir), "--out", str(out), "--layers", "1", "--tokens", "300",
                 "--epochs", "3", "--batch-size", "8", "--eval-tokens", "4", "--dtype", "float32", "--resume"]) == 0
    assert json.loads((out / "draft_config.json").read_text())["training"]["steps"] > training["steps"]


def test_corrupted_truncated_or_mismatched_checkpoints_are_refused(target_dir, tmp_path):
    out = tmp_path / "draft"
    assert main(["distill", "--target", str(target_dir), "--out", str(out), "--layers", "1", "--tokens", "150",
                 "--new-tokens", "8", "--samples", "0", "--epochs", "1", "--batch-size", "8", "--eval-tokens", "2",
                 "--dtype", "float32"]) == 0
    from transformers import AutoModelForCausalLM
    target = AutoModelForCausalLM.from_pretrained(target_dir, local_files_only=True)
    with pytest.raises(DraftCheckpointError, match="made for a target with"):
        load_draft(tiny_llama(layers=3, vocab=97, hidden=32), out)
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    data = (damaged / "draft.safetensors").read_bytes()
    (damaged / "draft.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DraftCheckpointError, match="missing or corrupted"):
        load_draft(target, damaged)
    (damaged / "draft_config.json").write_text("{not json")
    with pytest.raises(DraftCheckpointError, match="not valid JSON"):
        load_draft(target, damaged)
    with pytest.raises(DraftCheckpointError, match="not an autospec draft"):
        load_draft(target, tmp_path)
