"""Peak memory of a block of code, measured in the same process: polled /proc/self/statm (Linux) or CUDA's peak."""

import ctypes
import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def fix_mmap_threshold(nbytes: int = 1 << 16) -> None:
    """Serve allocations above `nbytes` with mmap, returned to the OS on free (glibc ``M_MMAP_THRESHOLD``).

    glibc raises its mmap threshold after the first large free, so later large tensors live on the heap and freed
    pages stay resident: RSS then measures fragmentation, not live tensors (measured: the chunked loss's forward grew
    RSS by 1.9 GB with ~0.2 GB live). Fixing the threshold makes RSS track live memory, for every variant alike.
    """
    ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD = -3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakMemory:
    """Context manager: ``peak_extra`` is the highest RSS seen inside the block minus the RSS on entry (bytes);
    ``start`` and ``peak`` are the RSS on entry and the highest seen (bytes).

    CPU tensors are not seen by tracemalloc, and ``ru_maxrss`` is a high-water mark for the whole process, so a
    sampler thread reads the RSS every `interval` seconds instead.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = self.peak_extra = 0

    def __enter__(self):
        self.start = self._peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = self._peak = max(self._peak, rss_bytes())
        self.peak_extra = self.peak - self.start
        return False


class DevicePeakMemory:
    """Peak memory above the level on entry (``peak`` bytes): the CUDA allocator's peak, or the polled RSS on CPU."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.rss = PeakMemory().__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.rss.__exit__(*exc)
            self.peak = self.rss.peak_extra
        return False
