"""The kernel's two speed changes keep every result: A, the last encoder layer computes the first token only
(same logits and gradients as the unchanged model, saved adapters still load); B, host-to-GPU copies go through
pinned memory (a no-op on CPU)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

TOL = 1e-6
ALL_TARGETS = "query,key,value,dense"
CPU = torch.device("cpu")


def tiny_encoder_config(arch: str = "roberta", layers: int = 2, dropout: float = 0.0, attention_dropout=None):
    from transformers import BertConfig, RobertaConfig, XLMRobertaConfig

    config_class = {"roberta": RobertaConfig, "bert": BertConfig, "xlm-roberta": XLMRobertaConfig}[arch]
    return config_class(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                        vocab_size=100, max_position_embeddings=64, type_vocab_size=1, pad_token_id=1,
                        initializer_range=0.05, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout if attention_dropout is None else attention_dropout)


def run_config(kernel, targets: str, dropout: float = 0.0):
    return kernel.config_from_overrides({"lora_targets": targets, "lora_r": 4, "head": "roberta",
                                         "lora_dropout": dropout, "head_dropout": dropout})


def last_layer(model) -> torch.nn.Module:
    return model.encoder.get_base_model().encoder.layer[-1]


def model_pair(kernel, cfg, source, dtype: torch.dtype = torch.float32, std: float = 0.1):
    """The changed model and the unchanged one (a copy with the override removed): the same weights, with every
    trainable tensor random (LoRA's B starts at zero, which would hide the LoRA paths from the comparison)."""
    torch.manual_seed(0)
    changed = kernel.build_model(cfg, source).to(dtype)
    with torch.no_grad():
        for p in changed.parameters():
            if p.requires_grad:
                p.normal_(0.0, std)
    unchanged = copy.deepcopy(changed)
    del last_layer(unchanged).forward
    assert "forward" in vars(last_layer(changed)) and "forward" not in vars(last_layer(unchanged))
    return changed, unchanged


def padded_batch(kernel, lengths=(13, 4, 9, 2, 13, 7), vocab: int = 100, seed: int = 1):
    """Rows of different lengths starting with <s> (id 0), padded by the kernel's own pad_batch (pad id 1)."""
    gen = torch.Generator().manual_seed(seed)
    seqs = [[0] + torch.randint(3, vocab, (n - 1,), generator=gen).tolist() for n in lengths]
    ids, mask = kernel.pad_batch(seqs, 1, CPU)
    labels = torch.arange(len(lengths)) % 4
    return ids, mask, labels


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def trainable_grads(model, ids, mask, labels) -> dict:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(ids, mask), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def apart(new: dict, old: dict, tol: float = TOL) -> dict:
    """The tensors of `new` further than `tol` from their namesakes in `old` (with their distance)."""
    assert new.keys() == old.keys()
    return {name: max_diff(new[name], old[name]) for name in new if max_diff(new[name], old[name]) > tol}


# ---------------------------------------------------------------------------------- A: first token only
@pytest.mark.compat
@pytest.mark.parametrize("targets", [ALL_TARGETS, "default"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_first_token_layer_keeps_the_logits(kernel, targets, dropout):
    targets = kernel.Config().lora_targets if targets == "default" else targets
    changed, unchanged = model_pair(kernel, run_config(kernel, targets, dropout), tiny_encoder_config(dropout=dropout))
    ids, mask, _ = padded_batch(kernel)
    assert (mask == 0).any()
    changed.eval(), unchanged.eval()
    with torch.no_grad():
        new, old = changed(ids, mask), unchanged(ids, mask)
    assert new.shape == old.shape == (len(ids), 4)
    assert max_diff(new, old) <= TOL


@pytest.mark.compat
@pytest.mark.parametrize(("targets", "dtype", "tol"), [
    (ALL_TARGETS, torch.float32, TOL), ("default", torch.float32, TOL), (ALL_TARGETS, torch.float64, 1e-12)])
def test_first_token_layer_keeps_the_gradients(kernel, targets, dtype, tol):
    """In float64 the two agree to rounding: the same function, computed in another order."""
    targets = kernel.Config().lora_targets if targets == "default" else targets
    changed, unchanged = model_pair(kernel, run_config(kernel, targets), tiny_encoder_config(), dtype)
    ids, mask, labels = padded_batch(kernel)
    changed.train(), unchanged.train()
    new, old = trainable_grads(changed, ids, mask, labels), trainable_grads(unchanged, ids, mask, labels)
    last = [n for n in new if ".layer.1." in n]
    assert len(last) == len([n for n in new if ".layer.0." in n]) > 0
    assert all(new[n].abs().max() > 1e-3 for n in last)  # the last layer's LoRA is in the comparison
    assert apart(new, old, tol) == {}


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "minilm"])
def test_first_token_layer_matches_on_every_listed_architecture(kernel, arch, request):
    """MiniLM is a pretrained BERT; it gets smaller LoRA weights, as larger ones reach transformers' own noise
    floor there (its sdpa and eager attention differ by 4e-6 in the gradients at 0.05)."""
    if arch == "minilm":
        source, std, vocab = request.getfixturevalue("minilm_path"), 0.02, 30_000
    else:
        source, std, vocab = tiny_encoder_config(arch), 0.1, 100
    changed, unchanged = model_pair(kernel, run_config(kernel, ALL_TARGETS), source, std=std)
    ids, mask, labels = padded_batch(kernel, vocab=vocab)
    new, old = trainable_grads(changed, ids, mask, labels), trainable_grads(unchanged, ids, mask, labels)
    assert apart(new, old) == {}


@pytest.mark.compat
def test_the_last_layer_sees_one_token_and_padding_stays_masked(kernel):
    changed, unchanged = model_pair(kernel, run_config(kernel, ALL_TARGETS), tiny_encoder_config())
    changed.eval()
    ids, mask, _ = padded_batch(kernel)
    widths = []
    last_layer(changed).register_forward_hook(lambda module, args, out: widths.append(out.shape[1]))
    with torch.no_grad():
        logits = changed(ids, mask)
        other_padding = torch.where(mask.bool(), ids, torch.randint_like(ids, 3, 100))
        assert max_diff(changed(other_padding, mask), logits) <= TOL  # padded keys take no part
        assert widths == [1, 1]
        # outside the classifier's forward the layer runs whole, as before the change
        hidden = changed.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = unchanged.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape == expected.shape == (*ids.shape, 32) and max_diff(hidden, expected) <= TOL


@pytest.mark.compat
def test_attention_dropout_stays_live_in_the_first_token_path(kernel):
    """One layer, dropout on the attention probabilities only: the first-token attention is the only stochastic
    step, so training-mode outputs vary and evaluation-mode outputs match the unchanged model."""
    source = tiny_encoder_config(layers=1, attention_dropout=0.5)
    changed, unchanged = model_pair(kernel, run_config(kernel, ALL_TARGETS), source)
    ids, mask, _ = padded_batch(kernel)
    changed.train()
    with torch.no_grad():
        assert max_diff(changed(ids, mask), changed(ids, mask)) > 1e-3
        changed.eval(), unchanged.eval()
        assert max_diff(changed(ids, mask), unchanged(ids, mask)) <= TOL


@pytest.mark.compat
def test_an_adapter_saved_before_the_change_loads(kernel, tmp_path):
    cfg, source = run_config(kernel, ALL_TARGETS), tiny_encoder_config()
    changed, unchanged = model_pair(kernel, cfg, source)
    folder = tmp_path / "adapter"
    kernel.save_adapter(kernel.Model(unchanged, None, cfg, "", {}), folder, 1.0)
    torch.manual_seed(0)  # the same random base encoder as model_pair's
    loaded = kernel.build_model(cfg, source, adapter=folder)
    assert "forward" in vars(last_layer(loaded))
    assert list(loaded.state_dict()) == list(unchanged.state_dict()) == list(changed.state_dict())
    loaded.eval(), unchanged.eval()
    ids, mask, _ = padded_batch(kernel)
    with torch.no_grad():
        assert max_diff(loaded(ids, mask), unchanged(ids, mask)) <= TOL


# ----------------------------------------------------------------------------------- B: pinned copies
@pytest.mark.compat
def test_to_device_leaves_cpu_tensors_alone(kernel):
    t = torch.arange(6)
    assert kernel.to_device(t, CPU) is t
    ids, mask = kernel.pad_batch([[0, 5, 6], [0, 7]], 1, CPU)
    assert ids.tolist() == [[0, 5, 6], [0, 7, 1]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.device == mask.device == CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_device_copies_through_pinned_memory_to_the_gpu(kernel):
    gpu = torch.device("cuda")
    t = torch.arange(6)
    moved = kernel.to_device(t, gpu)
    assert moved.device.type == "cuda" and moved.cpu().tolist() == t.tolist()
    assert not t.is_pinned()  # pinning copies: the caller's tensor is untouched
    ids, mask = kernel.pad_batch([[0, 5, 6], [0, 7]], 1, gpu)
    assert ids.device.type == mask.device.type == "cuda" and ids.shape == (2, 8)
    assert mask.sum(1).tolist() == [3, 2]
