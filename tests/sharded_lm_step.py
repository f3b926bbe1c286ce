"""Run with 8 emulated CPU devices (see test_sharding.py): prints JSON results of a few LM
training steps on several meshes, to be compared with the same steps on one device, and the
compiled shardings of the trunk's hidden states (recorded by wrapping `constrain`)."""

from __future__ import annotations

import json

import jax
import numpy as np
from flax import nnx

import datarater.models.transformer as transformer
from datarater.config import MeshConfig, ModelConfig, TrainConfig
from datarater.models.transformer import CausalLM
from datarater.parallel.activations import batch_split
from datarater.parallel.mesh import logical_axes_of, make_mesh, param_shardings, put_batch
from datarater.parallel.population import optimizer_shardings
from datarater.train.optimizer import make_optimizer
from datarater.train.step import make_train_step

HIDDEN: list[str] = []  # compiled shardings of the trunk's hidden states, recorded while tracing
_constrain = transformer.constrain


def spec_entries(sharding) -> str:
    """The spec without trailing Nones, as text: "fsdp", "data+fsdp" or "" (replicated)."""
    entries = ["+".join(e) if isinstance(e, tuple) else (e or "") for e in getattr(sharding, "spec", ())]
    while entries and not entries[-1]:
        entries.pop()
    return ",".join(entries)


def recording_constrain(x):
    y = _constrain(x)
    if y.ndim == 3:  # [B, T, d] hidden states (not the [B*T, V] logits)
        jax.debug.inspect_array_sharding(y, callback=lambda s: HIDDEN.append(spec_entries(s)))
    return y


transformer.constrain = recording_constrain

CFG = ModelConfig(name="t", vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_head=8, d_ff=64)
MESHES = {"one": dict(data=1, fsdp=1, tensor=1), "data8": dict(data=8), "fsdp8": dict(data=1, fsdp=8),
          "d2f2t2": dict(data=2, fsdp=2, tensor=2)}
# fsdp8 runs each batch as 2 microbatches (one row per device each): the same step as one device
MICROBATCHES = {"fsdp8": 2}


def main() -> None:
    rng = np.random.default_rng(0)
    batches = [{"tokens": rng.integers(0, 64, (16, 24)).astype(np.int32),
                "segment_ids": np.repeat([[1] * 12 + [2] * 12], 16, 0).astype(np.int32),
                "positions": np.tile(np.r_[np.arange(12), np.arange(12)], (16, 1)).astype(np.int32)} for _ in range(3)]
    model = CausalLM(CFG, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model)
    host_params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tx = make_optimizer(TrainConfig(steps=10, warmup_steps=0, lr=1e-2))
    out = {"devices": jax.device_count()}
    for name, sizes in MESHES.items():
        mcfg = MeshConfig(**sizes)
        devices = jax.devices()[:1] if name == "one" else jax.devices()
        mesh = make_mesh(mcfg, devices)
        shardings = param_shardings(logical_axes_of(model), host_params, mcfg.rules, mesh)
        params = jax.device_put(host_params, shardings)
        opt_shapes = jax.eval_shape(tx.init, host_params)
        opt_state = jax.jit(tx.init, out_shardings=optimizer_shardings(tx, opt_shapes, shardings, mesh))(params)
        micro = MICROBATCHES.get(name, 1)
        step = jax.jit(batch_split(make_train_step(graphdef, tx, micro), mesh, mcfg.rules))
        HIDDEN.clear()
        losses = []
        for b in batches:
            params, opt_state, m = step(params, opt_state, put_batch(b, mesh, mcfg.rules))
            losses.append(float(m["loss"]))
        wqkv = params["trunk"]["blocks"][0]["attn"]["wqkv"]
        mu = next(leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
                  if "mu" in jax.tree_util.keystr(path) and "wqkv" in jax.tree_util.keystr(path))
        out[name] = {"losses": losses, "microbatches": micro, "wqkv_spec": str(wqkv.sharding.spec), "mu_spec": str(mu.sharding.spec),
                     "hidden_specs": sorted(set(HIDDEN)), "hidden_count": len(HIDDEN),
                     "wqkv_shards": len({str(s.index) for s in wqkv.addressable_shards}),
                     "params": [np.asarray(x).ravel()[:50].tolist() for x in jax.tree.leaves(params)]}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
