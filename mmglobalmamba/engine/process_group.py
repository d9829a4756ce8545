"""Tear down the default process group while the interpreter is still whole.

A gloo process group runs worker threads that drop their finished collectives themselves.
Dropping one releases its tensors, and releasing a tensor that Python has seen takes the GIL.
If the main thread has already begun interpreter shutdown, that thread is stopped by a forced
unwind through a ``noexcept`` destructor and the rank aborts with "terminate called without
an active exception" (seen on about one 2-process CPU run in ten). ``destroy_process_group``
alone does not help: gloo's ``shutdown`` is a no-op and the threads are only joined when the
last reference goes, and the DDP wrapper of a runner's model holds one.
"""
import gc


def release_process_group():
    """Destroy the default process group and free it, joining gloo's worker threads.

    Call it after the last reference to the runner (its DDP wrapper holds the group) is gone.
    The group is freed through torch's binding, which lets go of the GIL while the threads
    are joined, so a worker waiting for the GIL finishes first. No-op without a group.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    gc.collect()  # a runner left in a reference cycle still holds the group until collected
