# A throwaway OpenSSH server on 127.0.0.1 for the demo and benchmarks.
# start_sshd DIR: generates keys, starts sshd on a free port, writes DIR/known_hosts and
# DIR/config.toml (the [sftp] section for jumio-batchd; the state database in STATE_DIR when set,
# else in DIR); sets SSHD_PID and SSHD_PORT.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_sshd() {
  local dir=$1 listen=${2:-127.0.0.1}
  mkdir -p "$dir/home"
  ssh-keygen -q -t ed25519 -N '' -C demo-host -f "$dir/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C demo-client -f "$dir/client_key"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  SSHD_PORT=$(free_port)
  cat > "$dir/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress $listen
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthenticationMethods publickey
PermitRootLogin prohibit-password
MaxStartups 100
Subsystem sftp internal-sftp -d $dir/home
CONF
  [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
  ${SSHD_PREFIX:-} /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
  SSHD_PID=$!
  for _ in $(seq 1 100); do
    ${SSHD_PREFIX:-} ssh-keyscan -p "$SSHD_PORT" -t ed25519 "$listen" >"$dir/known_hosts" 2>/dev/null && [ -s "$dir/known_hosts" ] && break
    sleep 0.1
  done
  [ -s "$dir/known_hosts" ] || { echo "sshd did not start:"; cat "$dir/sshd.log"; return 1; }
  cat > "$dir/config.toml" <<CONF
[sftp]
host = "$listen"
port = $SSHD_PORT
user = "$(id -un)"
private_key = "$dir/client_key"
known_hosts = "$dir/known_hosts"
remote_dir = "."
connections = ${CONNECTIONS:-8}
timeout_secs = 30

[state]
database = "${STATE_DIR:-$dir}/state.db"
CONF
}
