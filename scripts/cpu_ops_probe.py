"""Hash each CPU operation the pipeline's numbers rest on, one line `op=hash ...`, under the current environment.

Run it on two machines (or under `qemu-x86_64 -cpu <model>`, see scripts/emulated_cpus.sh) with the same pinned
settings to see which operations compute differently there: MKL's GEMMs, MKL's vector math (exp, log, sqrt, erf),
torch's own kernels (softmax, norms, SDPA), and two AdamW steps of a 2-layer Mistral. docs/reproducibility.md has the
results for an emulated Intel and an emulated AMD CPU.
"""

import hashlib

import torch
from transformers import MistralConfig, MistralForCausalLM


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:8]


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=g)
    positive = x.abs() + 0.1
    results = {  # element-wise: MKL's vector math library (VML) serves some of these in torch's CPU build
        "exp": x.exp(), "log": positive.log(), "sqrt": positive.sqrt(), "erf": x.erf(), "cos": x.cos(),
        "rsqrt": positive.rsqrt(), "sigmoid": x.sigmoid(), "silu": torch.nn.functional.silu(x),
        "softmax": x.view(64, 64).softmax(-1), "log_softmax": x.view(64, 64).log_softmax(-1),
    }
    tokens = torch.randn(2, 16, 192, generator=g)
    for width in (64, 192, 512, 2048):  # the tiny model's projections: x @ W^T through MKL's SGEMM
        results[f"linear_192x{width}"] = torch.nn.functional.linear(tokens, torch.randn(width, 192, generator=g))
    for n in (8, 64, 256):
        results[f"matmul_{n}"] = torch.randn(n, 192, generator=g) @ torch.randn(192, n, generator=g)
    q, k = torch.randn(2, 6, 16, 32, generator=g), torch.randn(2, 6, 16, 32, generator=g)
    results["sdpa_causal"] = torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True)

    config = MistralConfig(vocab_size=2048, hidden_size=192, intermediate_size=512, num_hidden_layers=2,
                           num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
                           sliding_window=None, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = MistralForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(0, 2048, (2, 16), generator=g)
    results["model_logits"] = model(input_ids=ids).logits
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    results["adamw_2_steps"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    print(" ".join(f"{name}={digest(value)}" for name, value in results.items()))


if __name__ == "__main__":
    main()
