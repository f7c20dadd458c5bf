"""The machine description every record and make bench carry names the CPU's vector extensions."""

from experiments import PROJECT_ROOT
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
    assert environment.cpu_model() == next(
        line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
    )


def test_the_recorded_commit_is_the_one_checked_out_when_the_process_started(tmp_path):
    """A long run records the code it loaded: HEAD read at import, not when the record is written."""
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "experiments", repo / "experiments", ignore=shutil.ignore_patterns("__pycache__"))

    def git(*a):
        return subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *a],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q"), git("add", "."), git("commit", "-q", "-m", "first")
    first = git("rev-parse", "HEAD")
    script = (
        "import subprocess, sys\n"
        "from experiments.machine import environment\n"
        "subprocess.run(['git', '-C', sys.argv[1], '-c', 'user.name=t', '-c', 'user.email=t@t',"
        " 'commit', '-q', '--allow-empty', '-m', 'while it ran'], check=True)\n"
        "print(environment.git_commit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(repo)], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == first != git("rev-parse", "HEAD")
