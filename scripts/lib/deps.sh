# Installs what building and testing need, only where it is missing (Debian/Ubuntu).
# Sourced by scripts/test, scripts/demo and scripts/bench.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to install packages: $*" >&2; return 1; fi
}

ensure_deps() {
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v sftp >/dev/null || missing+=(openssh-client)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v script >/dev/null || missing+=(bsdutils)     # a pseudo-terminal for the progress bar test
  command -v lintian >/dev/null || missing+=(lintian)     # the Debian package test
  # A private PostgreSQL server for the fleet tests (tests/support/postgres.rs starts its own).
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  # promtool checks the metrics and README's alert rules (tests/operator.rs).
  command -v promtool >/dev/null || missing+=(prometheus)
  # A daemon under a shifted clock (tests/fleet.rs), and a real network share (tests/share.rs).
  ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(libfaketime)
  command -v sshfs >/dev/null || missing+=(sshfs)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # An SFTP server that is not OpenSSH, for tests/other_server.rs.
  if ! python3 -c 'import asyncssh' 2>/dev/null; then
    echo "installing: asyncssh (PyPI)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore asyncssh >/dev/null
  fi
  # sshd refuses to start as root without its privilege-separation directory.
  if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 0755 /run/sshd; fi
  # scripts/package builds the .deb with cargo-deb.
  command -v cargo-deb >/dev/null || { echo "installing: cargo-deb" >&2; cargo install --locked --quiet cargo-deb; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}
