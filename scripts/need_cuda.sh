# Sourced by the GPU scripts: without a CUDA GPU they stop in one line, exit 2, before making anything. On a CPU they
# would otherwise run for hours (gpu_fast_path.sh: 2.7B train at context 1024) or fail half-way (nsys, nvidia-smi).
# LMBENCH_SKIP_CUDA_CHECK=1 skips the check, for the CPU tests that run a script with a python3 that only logs.
need_cuda() {  # need_cuda SCRIPT_NAME [PROGRAM ...]: also needs each PROGRAM on the PATH (nsys)
    local script=$1 program
    shift
    [ "${LMBENCH_SKIP_CUDA_CHECK:-0}" = 1 ] && return 0
    if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "$script: needs a CUDA GPU; torch finds none" >&2
        exit 2
    fi
    for program in "$@"; do
        command -v "$program" > /dev/null || { echo "$script: needs $program on the PATH" >&2; exit 2; }
    done
}
