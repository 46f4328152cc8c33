"""Backbones: the pooled EOS token, W, seeded random weights, clear errors."""
import pytest
import torch
from torch import nn

from semobridge.backbones import BackboneError, _text_projection_owner, load_backbone


def test_eos_times_projection_is_clip_text_embedding(tiny_backbone):
    texts = ["a photo of a red fox.", "art of the blue whale.", "x"]
    eos = tiny_backbone.encode_text_eos(texts)
    with torch.no_grad():
        reference = tiny_backbone.model.encode_text(tiny_backbone.tokenizer(texts))
    assert eos.shape == (3, 48)
    torch.testing.assert_close(eos @ tiny_backbone.text_projection, reference, rtol=1e-5, atol=1e-5)
    # the model itself is never touched (safe while other threads use it)
    assert isinstance(tiny_backbone.model.text_projection, nn.Parameter)


def test_the_eos_pass_does_not_touch_the_model_while_other_threads_use_it(tiny_backbone):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["a photo of a red fox."] * 4
    tokens = tiny_backbone.tokenizer(texts)
    with torch.no_grad():
        expected = tiny_backbone.model.encode_text(tokens)

    def full_embedding(_):
        with torch.no_grad():
            return tiny_backbone.model.encode_text(tokens)

    with ThreadPoolExecutor(4) as pool:
        eos = pool.map(lambda _: tiny_backbone.encode_text_eos(texts), range(20))
        full = list(pool.map(full_embedding, range(20)))
        assert all(e.shape == (4, 48) for e in eos)
    assert all(torch.equal(f, expected) for f in full)


def test_eos_is_ln_final_output_at_eot(tiny_backbone):
    m, tok = tiny_backbone.model, tiny_backbone.tokenizer(["a photo of a cat."])
    with torch.no_grad():
        x = m.token_embedding(tok) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
    torch.testing.assert_close(tiny_backbone.encode_text_eos(["a photo of a cat."]), x[:, tok.argmax(-1)[0]], rtol=1e-5, atol=1e-6)


def test_random_weights_are_seeded(tiny_backbone):
    again = load_backbone("semobridge-tiny", "none", device="cpu", seed=0)
    other = load_backbone("semobridge-tiny", "none", device="cpu", seed=1)
    assert again.weights_hash == tiny_backbone.weights_hash != other.weights_hash
    assert tiny_backbone.is_random and tiny_backbone.identity()["pretrained"] == "none"


def test_resnet_backbone():
    rn = load_backbone("semobridge-tiny-rn", "none", device="cpu")
    assert rn.image_size == 64 and rn.text_projection.shape == (48, 64)
    assert rn.encode_image(torch.zeros(2, 3, 64, 64)).shape == (2, 64)


def test_tower_without_text_projection_is_refused():
    class HFStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = nn.Sequential(nn.Linear(4, 4))

    with pytest.raises(BackboneError, match="no CLIP-style text projection"):
        _text_projection_owner(HFStyle())


def test_unknown_model_and_missing_checkpoint():
    with pytest.raises(BackboneError, match="unknown model"):
        load_backbone("no-such-model", "none")
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone("semobridge-tiny", "/nonexistent/weights.bin")


def test_local_checkpoint_file(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    loaded = load_backbone("semobridge-tiny", str(path), device="cpu", seed=5)
    assert loaded.weights_hash == tiny_backbone.weights_hash
    assert loaded.pretrained == str(path.resolve())


def test_offline_tag_names_the_ways_on():
    with pytest.raises(BackboneError, match="not in the local Hugging Face cache") as caught:
        load_backbone("semobridge-tiny", "openai")
    assert "--pretrained PATH" in caught.value.hint and "HF_HUB_OFFLINE=1" in caught.value.hint
