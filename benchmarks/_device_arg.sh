# Sourced by the GPU benchmark scripts: sets DEVICE from their only argument
# (--device=cuda, the default, or --device=cpu for a tiny smoke run) and checks OUT.
DEVICE=cuda
for arg in "$@"; do
  case "$arg" in
    --device=cpu) DEVICE=cpu ;;
    --device=cuda) DEVICE=cuda ;;
    *) echo "unknown argument $arg (valid: --device=cuda|cpu)" >&2; exit 2 ;;
  esac
done
: "${OUT:?set OUT to the folder that receives the results}"
