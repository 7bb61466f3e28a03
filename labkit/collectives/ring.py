"""Exercise: all_reduce (sum) built from nothing but send and receive, the ring way.

Picture n ranks in a ring, each sending only to its right neighbour (rank+1) and receiving
only from its left neighbour (rank-1). Cut every tensor into n chunks.

1. reduce-scatter, n-1 steps: at step s, rank r sends chunk (r - s) mod n to the right and
   adds the chunk (r - s - 1) mod n arriving from the left into its own copy. After n-1
   steps, rank r holds the complete sum of chunk (r + 1) mod n.
2. all-gather, n-1 steps: at step s, rank r sends chunk (r + 1 - s) mod n (the finished one
   it holds or just received) to the right and stores the chunk (r - s) mod n arriving from
   the left. After n-1 steps every rank has every finished chunk.

Every rank sends 2(n-1)/n of the tensor in total, whatever n is: that is why the busbw
factor of all_reduce is 2(n-1)/n, and why ring all_reduce is bandwidth-optimal. The price is
2(n-1) sequential steps, each paying the link latency (alpha): see alpha_beta.py.

Check your version (it may be defined in a notebook cell):
    from labkit.checks.collectives import check_ring_all_reduce
    check_ring_all_reduce(ring_all_reduce)
"""

from __future__ import annotations


def ring_all_reduce(tensor):
    """Sum `tensor` over all ranks in place with dist.isend/dist.recv only; return it.

    Must work for any world size and any number of elements, including fewer elements than
    ranks and sizes not divisible by the world size.
    """
    import torch
    import torch.distributed as dist

    # BEGIN SOLUTION
    # HINT: reduce-scatter, then all-gather: n-1 steps each, send to rank+1, recv from rank-1
    # HINT: chunks = list(torch.tensor_split(tensor.view(-1), n)) are views of uneven sizes
    # HINT: per step: req = dist.isend(chunk, dst=right); dist.recv(buf, src=left); req.wait()
    rank, n = dist.get_rank(), dist.get_world_size()
    if n == 1:
        return tensor
    right, left = (rank + 1) % n, (rank - 1) % n
    flat = tensor.view(-1)  # a view: writing into the chunks writes into `tensor`
    chunks = list(torch.tensor_split(flat, n))

    def exchange(send_idx: int, recv_idx: int) -> torch.Tensor:
        """Send chunk send_idx to the right, return the left neighbour's chunk recv_idx."""
        incoming = torch.empty_like(chunks[recv_idx])
        # Both neighbours compute the same chunk sizes, so they agree to skip empty chunks.
        send = dist.isend(chunks[send_idx], dst=right) if chunks[send_idx].numel() else None
        if incoming.numel():
            dist.recv(incoming, src=left)
        if send is not None:
            send.wait()
        return incoming

    for step in range(n - 1):  # reduce-scatter
        recv_idx = (rank - step - 1) % n
        chunks[recv_idx] += exchange((rank - step) % n, recv_idx)
    for step in range(n - 1):  # all-gather
        recv_idx = (rank - step) % n
        chunks[recv_idx].copy_(exchange((rank + 1 - step) % n, recv_idx))
    return tensor
    # END SOLUTION
