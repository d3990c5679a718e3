"""make_model_seeds.py: writes the seeds of fuzz_model (fuzz/corpus/model): a 1-layer MiniCPM4
checkpoint (vocab 16, hidden 16, 2 heads, 1 KV head, intermediate 32) as one model.safetensors,
as two shards with an index, and with a sparse_config, each packed as the target's archive
([u8 name length][name][u32 LE size][data] per file). Weights are small deterministic bf16."""
import json, os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "model")
os.makedirs(out, exist_ok=True)
V, H, I, HQ, HKV = 16, 16, 32, 2, 1
D = H // HQ
config = {"model_type": "minicpm", "vocab_size": V, "hidden_size": H, "intermediate_size": I,
          "num_hidden_layers": 1, "num_attention_heads": HQ, "num_key_value_heads": HKV,
          "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
          "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 256, "tie_word_embeddings": True,
          "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": None}
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H],
          "model.layers.0.input_layernorm.weight": [H], "model.layers.0.post_attention_layernorm.weight": [H],
          "model.layers.0.self_attn.q_proj.weight": [HQ * D, H], "model.layers.0.self_attn.k_proj.weight": [HKV * D, H],
          "model.layers.0.self_attn.v_proj.weight": [HKV * D, H], "model.layers.0.self_attn.o_proj.weight": [H, HQ * D],
          "model.layers.0.mlp.gate_proj.weight": [I, H], "model.layers.0.mlp.up_proj.weight": [I, H],
          "model.layers.0.mlp.down_proj.weight": [H, I]}


def bf16(x):
    return struct.pack("<f", x)[2:]


def safetensors(names):
    header, blobs, off = {}, [], 0
    for i, n in enumerate(names):
        count = 1
        for s in shapes[n]:
            count *= s
        data = b"".join(bf16(((k * 37 + i) % 17 - 8) / 64.0) for k in range(count))
        header[n] = {"dtype": "BF16", "shape": shapes[n], "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def pack(files):
    return b"".join(bytes([len(n)]) + n.encode() + struct.pack("<I", len(d)) + d for n, d in files)


names = sorted(shapes)
cfg = json.dumps(config).encode()
seeds = {"whole": [("config.json", cfg), ("model.safetensors", safetensors(names))]}
half = len(names) // 2
shards = [names[:half], names[half:]]
index = {"metadata": {"total_size": 0},
         "weight_map": {n: "model-%05d-of-00002.safetensors" % (1 + (n in shards[1])) for n in names}}
seeds["sharded"] = [("config.json", cfg), ("model.safetensors.index.json", json.dumps(index).encode()),
                    ("model-00001-of-00002.safetensors", safetensors(shards[0])),
                    ("model-00002-of-00002.safetensors", safetensors(shards[1]))]
sparse = dict(config, sparse_config={"kernel_size": 8, "kernel_stride": 4, "init_blocks": 1, "block_size": 16,
                                     "window_size": 32, "topk": 4, "dense_len": 32})
seeds["sparse"] = [("config.json", json.dumps(sparse).encode()), ("model.safetensors", safetensors(names))]
for name, files in seeds.items():
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(pack(files))
