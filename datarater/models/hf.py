"""Our parameters in Hugging Face's layouts: the causal LM as a Llama checkpoint, the rater as named tensors.

Pure functions from a pure parameter dict (``nnx.to_pure_dict``) to ``{name: numpy array}`` and a
config dict; writing files is the caller's job. The LM maps onto ``LlamaForCausalLM`` one to one
when its MLP is SwiGLU (``model.mlp=swiglu``): RMSNorm with a scale, rotary embeddings on the two
halves of each head (Llama's ``rotate_half``), no biases, an untied output head. A GELU MLP has no
Llama equivalent, so `lm_to_llama` refuses it with the key to change.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from datarater.config import ModelConfig
from datarater.errors import UserError

RATER_FORMAT = "datarater-rater"
RATER_FORMAT_VERSION = 1


def _np(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x))


def _blocks(trunk: dict) -> list[dict]:
    blocks = trunk["blocks"]
    return [blocks[k] for k in sorted(blocks, key=int)]


def _trunk_tensors(trunk: dict, cfg: ModelConfig, prefix: str) -> dict[str, np.ndarray]:
    """Llama's names for the embedding, the blocks and the final norm (``prefix`` = "model.")."""
    d, h, k = cfg.d_model, cfg.n_heads, cfg.d_head
    out = {f"{prefix}embed_tokens.weight": _np(trunk["embed"])}
    for i, blk in enumerate(_blocks(trunk)):
        p = f"{prefix}layers.{i}."
        wqkv = _np(blk["attn"]["wqkv"])  # [d, 3, h, k]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{p}self_attn.{name}.weight"] = _np(wqkv[:, j].reshape(d, h * k).T)
        out[f"{p}self_attn.o_proj.weight"] = _np(_np(blk["attn"]["wo"]).reshape(h * k, d).T)
        out[f"{p}input_layernorm.weight"] = _np(blk["attn_norm"]["scale"])
        out[f"{p}post_attention_layernorm.weight"] = _np(blk["mlp_norm"]["scale"])
        mlp = blk["mlp"]
        if "w_gate" in mlp:
            out[f"{p}mlp.gate_proj.weight"] = _np(_np(mlp["w_gate"]).T)
            out[f"{p}mlp.up_proj.weight"] = _np(_np(mlp["w_in"]).T)
        else:  # GELU: only the rater's own format can hold it
            out[f"{p}mlp.in_proj.weight"] = _np(_np(mlp["w_in"]).T)
        out[f"{p}mlp.down_proj.weight"] = _np(_np(mlp["w_out"]).T)
    out[f"{prefix}norm.weight"] = _np(trunk["final_norm"]["scale"])
    return out


def check_llama_expressible(cfg: ModelConfig, key: str = "model") -> None:
    """Stops with the key to change when ``cfg`` has no ``LlamaForCausalLM`` equivalent."""
    if cfg.mlp != "swiglu":
        raise UserError(f"config key '{key}.mlp' is '{cfg.mlp}': a Hugging Face Llama checkpoint needs "
                        f"'swiglu' (Llama's gated MLP; a GELU MLP has no Llama equivalent). "
                        f"Train the LM with {key}.mlp=swiglu to export it")


def lm_to_llama(params: dict, cfg: ModelConfig, seq_len: int, pad_id: int, bos_id: int,
                eos_id: int) -> tuple[dict[str, np.ndarray], dict]:
    """``(tensors, config.json dict)`` of a ``LlamaForCausalLM`` equal to our causal LM."""
    check_llama_expressible(cfg)
    tensors = _trunk_tensors(params["trunk"], cfg, "model.")
    tensors["lm_head.weight"] = _np(_np(params["head"]).T)
    dtype = str(tensors["lm_head.weight"].dtype)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.d_head,
        "hidden_act": "silu",
        "max_position_embeddings": seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # transformers >= 5 reads rope_parameters; 4.x reads rope_theta
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
        "rope_theta": cfg.rope_base,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "bfloat16" if "bfloat16" in dtype else "float32",
        "datarater": {"model": asdict(cfg)},
    }
    return tensors, config


def rater_tensors(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The rater's tensors under Llama's trunk names, plus ``score.weight [d]`` and ``score.bias []``.

    The MLP is ``mlp.up_proj`` (+ ``mlp.gate_proj`` for SwiGLU) or ``mlp.in_proj`` (GELU), then
    ``mlp.down_proj``; every matrix is stored ``[out, in]`` as in PyTorch.
    """
    tensors = _trunk_tensors(params["trunk"], cfg, "")
    tensors["score.weight"] = _np(params["head"]).astype(np.float32)
    tensors["score.bias"] = _np(params["bias"]).astype(np.float32).reshape(())
    return tensors


def rater_config(cfg: ModelConfig, seq_len: int, tokenizer: dict) -> dict:
    """The exported rater's ``config.json``: everything `rater_numpy` needs to score."""
    return {
        "format": RATER_FORMAT,
        "format_version": RATER_FORMAT_VERSION,
        "model": asdict(cfg),
        "seq_len": seq_len,
        "tokenizer": tokenizer,
        "attention": "bidirectional within a document chunk",
        "pooling": "mean of the final-norm hidden states over the chunk's tokens, then score.weight . h + score.bias",
        "document_score": "mean over the document's seq_len-token chunks of [bos] + tokens + [eos]",
    }
