# PyTorch eager on the same GPU and the same workloads as bench/cuda.cpp (G1 G2 G3), printed
# in the same "name value" form. Run by cuda/check_on_gpu.sh with a Python whose torch has CUDA.
import time
import torch

def median_ms(reps, body):
    body()
    torch.cuda.synchronize()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        body()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return ms[len(ms) // 2]

def main():
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # ember's sgemm is strict fp32
    dev = torch.device("cuda:0")
    n = 64 << 20
    x = torch.full((n,), 1.0, device=dev)
    y = torch.full((n,), 2.0, device=dev)
    out = torch.empty(n, device=dev)
    copy = median_ms(30, lambda: out.copy_(x))
    def e1():
        torch.add(torch.mul(x, 1.5), torch.mul(y, -0.5), out=out).add_(0.25)
    e1_ms = median_ms(30, e1)
    print(f"torch_G1_copy_ms {copy:.4f}")
    print(f"torch_G1_e1_ms {e1_ms:.4f}")
    m = 8192
    a = torch.randn(m, m, device=dev)
    b = torch.randn(m, m, device=dev)
    print(f"torch_G2_sgemm_ms {median_ms(10, lambda: torch.mm(a, b)):.3f}")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xb = torch.randn(64, 784, device=dev)
    tb = torch.randint(0, 10, (64,), device=dev)
    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xb), tb)
        loss.backward()
        opt.step()
    print(f"torch_G3_mlp_step_ms {median_ms(200, step):.4f}")
    print(f"torch_version {torch.__version__} device {torch.cuda.get_device_name(0)}")

main()
