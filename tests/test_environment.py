"""The machine description every record and make bench carry names the CPU's vector extensions."""

from experiments.machine import environment


def test_the_widest_vector_extension_is_named():
    assert environment.vector_extensions("fpu sse2 avx avx2 avx512f avx512bw") == "AVX-512"
    assert environment.vector_extensions("fpu sse2 avx avx2 fma") == "AVX2"
    assert environment.vector_extensions("fpu sse2 avx") == "AVX"
    assert environment.vector_extensions("fpu sse2") == "none"
    assert environment.vector_extensions("avx512vl") == "none"  # only avx512f (the foundation) counts


def test_this_machine_is_described_from_proc_cpuinfo():
    flags = next(line.split(":", 1)[1] for line in open("/proc/cpuinfo") if line.startswith("flags"))
    assert environment.vector_extensions() == environment.vector_extensions(flags)
    assert environment.cpu_model() == next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                           if line.startswith("model name"))
