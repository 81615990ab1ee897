#!/bin/sh
# Runs as /opt/nvgrace-test/run.sh in the systemd guest (systemd-guest.test.ts), as root,
# from a oneshot unit once the system is up. It installs the project the README's way and
# checks the units under the real systemd. Every check prints `SDCHECK <name> PASS|FAIL
# <details>`; facts print `SDINFO <name> <text>`; the host test parses both.
# params.sh (written by the test) sets DEVMEM_BASE, DEVMEM_SIZE and WATCHDOG_SEC.
T=/opt/nvgrace-test
. $T/params.sh
P=/opt/nvgrace-vfio-user
CLI="node $P/bin/nvgrace-vfio-user.js"
CLIENT="node $T/client.mjs"
U=nvgrace-vfio-user
S=/run/nvgrace-vfio-user/gpu0.sock
BAR0=0
BAR2=2

ok() { echo "SDCHECK $1 PASS $2"; }
nok() { echo "SDCHECK $1 FAIL $2"; }
# check NAME DETAILS COMMAND...: PASS when the command succeeds
check() { n=$1 d=$2; shift 2; if "$@"; then ok "$n" "$d"; else nok "$n" "$d"; fi; }
info() { n=$1; shift; echo "SDINFO $n $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
prop() { systemctl show -P "$2" "$1"; }
# wait_until SECONDS COMMAND...: poll every 0.2 s
wait_until() {
  w_end=$(($(date +%s) + $1)); shift
  while ! "$@"; do
    [ "$(date +%s)" -ge $w_end ] && return 1
    sleep 0.2
  done
}
is_active() { [ "$(systemctl is-active "$1")" = active ]; }
pid_changed() { p=$(prop $U@gpu0.service MainPID); [ "$p" != 0 ] && [ "$p" != "$1" ] && is_active $U@gpu0.service; }
status_is() { [ "$(prop "$1" StatusText)" = "$2" ]; }

info boot "system up at $(up) s: $(systemctl is-system-running)"
info versions "$(systemctl --version | head -n 1); node $(node --version)"
info failed-units "$(systemctl --failed --no-legend --plain | tr '\n' ';')"
systemd-analyze blame --no-pager 2>&1 | head -n 6 | sed 's/^/SDINFO blame /'
info devmem-range "$(grep -i "$(printf '%x' $DEVMEM_BASE)" /proc/iomem | head -n 1)"

# ----------------------------------------------------------------- the README's install
cd $P || exit 1
$CLI install-units >/tmp/install.out 2>&1
rc=$?
check install-units "exit $rc: $(tr '\n' ' ' </tmp/install.out)" [ $rc = 0 ]
check install-execstart "$(grep ^ExecStart= /etc/systemd/system/$U@.service)" \
  grep -qx "ExecStart=$(command -v node) $P/bin/nvgrace-vfio-user.js serve" /etc/systemd/system/$U@.service
cp /etc/nvgrace-vfio-user/example.env /etc/nvgrace-vfio-user/gpu0.env
# A file backing in /dev/shm: the memory outlives a restart of the daemon.
echo "NVGRACE_VFIO_USER_APERTURE_PATH=/dev/shm/nvgrace-gpu0" >>/etc/nvgrace-vfio-user/gpu0.env
# The test's one change to the unit: a shorter watchdog than the shipped 30 s.
mkdir -p /etc/systemd/system/$U@gpu0.service.d
printf '[Service]\nWatchdogSec=%s\n' "$WATCHDOG_SEC" >/etc/systemd/system/$U@gpu0.service.d/watchdog.conf
systemctl daemon-reload
systemctl enable --now $U@gpu0.socket >/tmp/enable.out 2>&1
rc=$?
check socket-enable "exit $rc: $(tr '\n' ' ' </tmp/enable.out)" [ $rc = 0 ]
check socket-listening "$(stat -c '%A %U:%G' $S 2>&1)" test -S $S
check socket-mode-group "$(stat -c '%a %G' $S 2>&1)" [ "$(stat -c '%a %G' $S 2>/dev/null)" = "660 kvm" ]
check service-not-started "$(systemctl is-active $U@gpu0.service)" [ "$(systemctl is-active $U@gpu0.service)" = inactive ]

info time-installed "$(up)"
# ------------------------------------------------------------------ socket activation
t0=$(up)
$CLI inspect --socket $S >/tmp/inspect.out 2>&1
rc=$?
info inspect-time "$t0 -> $(up)"
check inspect-served "exit $rc: $(grep -m1 '^config:' /tmp/inspect.out || tail -n 3 /tmp/inspect.out | tr '\n' ' ')" \
  grep -q '^config: vendor 0x10de device 0x2342' /tmp/inspect.out
check activated "$(systemctl is-active $U@gpu0.service)" is_active $U@gpu0.service
PID=$(prop $U@gpu0.service MainPID)
info main-pid "$PID"
st=/proc/$PID/status
check hardening-capabilities "$(grep -E '^Cap(Eff|Bnd)' $st | tr '\n\t' '  ')" \
  sh -c "grep -q '^CapBnd:[[:space:]]*0000000000000000' $st && grep -q '^CapEff:[[:space:]]*0000000000000000' $st"
check hardening-no-new-privs "$(grep NoNewPrivs $st | tr '\t' ' ')" grep -q '^NoNewPrivs:[[:space:]]*1' $st
check hardening-seccomp "$(grep '^Seccomp:' $st | tr '\t' ' ')" grep -q '^Seccomp:[[:space:]]*2' $st
# ProtectSystem=strict: the root is read-only in the daemon's mount namespace.
rootopts=$(awk '$5 == "/" { print $6 }' /proc/$PID/mountinfo | tail -n 1)
check hardening-read-only-root "/ $rootopts" sh -c "echo '$rootopts' | grep -q '^ro'"
check hardening-private-tmp "$(awk '$5 == "/tmp" { print $4 }' /proc/$PID/mountinfo | tail -n 1)" \
  sh -c "awk '\$5 == \"/tmp\"' /proc/$PID/mountinfo | grep -q ."
check hardening-device-policy "$(prop $U@gpu0.service DevicePolicy)" [ "$(prop $U@gpu0.service DevicePolicy)" = closed ]

# ------------------------------------------------------------------------------ status
# A client that writes a pattern into the file-backed memory and stays attached.
PATTERN=5a17c0de0123456789abcdeffedcba98
rm -f /tmp/release
$CLIENT $S write $BAR2 0x1000 $PATTERN hold /tmp/release >/tmp/hold.out 2>&1 &
HOLD=$!
wait_until 120 grep -q 'SDCLIENT wrote' /tmp/hold.out
check memory-written "$(tail -n 1 /tmp/hold.out)" grep -q 'SDCLIENT wrote' /tmp/hold.out
CPID=$(sed -n 's/^SDCLIENT pid=\([0-9]*\) attached/\1/p' /tmp/hold.out)
wait_until 10 status_is $U@gpu0.service "client pid $CPID attached"
systemctl status --no-pager $U@gpu0.service >/tmp/status.out 2>&1
check status-attached "$(grep 'Status:' /tmp/status.out)" grep -q "Status: \"client pid $CPID attached\"" /tmp/status.out
touch /tmp/release
wait $HOLD
wait_until 30 status_is $U@gpu0.service "waiting for a client"
systemctl status --no-pager $U@gpu0.service >/tmp/status.out 2>&1
check status-waiting "$(grep 'Status:' /tmp/status.out)" grep -q 'Status: "waiting for a client"' /tmp/status.out

# ----------------------------------------------------------------------------- journal
journalctl -q --no-pager -o cat _SYSTEMD_UNIT=$U@gpu0.service >/tmp/journal.out 2>&1
line=$(grep '"msg":"client connected"' /tmp/journal.out | grep "\"pid\":$CPID," | head -n 1)
check journal-client-pid-uid "$line" sh -c "echo '$line' | grep -q '\"uid\":0'"
check journal-json-lines "$(grep -c '^{"level":' /tmp/journal.out) JSON lines" grep -q '"service":"nvgrace-vfio-user"' /tmp/journal.out

# -------------------------------------------------------------------------------- stop
SPID=$(prop $U@gpu0.service MainPID)
# systemd logs the notification messages it gets only at debug level.
systemd-analyze log-level debug
systemctl stop $U@gpu0.service
rc=$?
systemd-analyze log-level info
check stop-exit "systemctl stop: exit $rc; $(prop $U@gpu0.service Result) $(prop $U@gpu0.service ExecMainCode)/$(prop $U@gpu0.service ExecMainStatus)" \
  sh -c "[ $rc = 0 ] && [ '$(prop $U@gpu0.service Result)' = success ] && [ '$(prop $U@gpu0.service ExecMainStatus)' = 0 ]"
journalctl -q --no-pager -o cat -u $U@gpu0.service >/tmp/stop.out 2>&1
check stop-stopping "$(grep -m1 "PID $SPID.*STOPPING=1" /tmp/stop.out)" grep -q "PID $SPID.*STOPPING=1" /tmp/stop.out
check stop-socket-kept "$(systemctl is-active $U@gpu0.socket), $(stat -c %F $S 2>&1)" \
  sh -c "[ '$(systemctl is-active $U@gpu0.socket)' = active ] && [ -S $S ]"
# The kept socket starts the daemon again; the file backing kept the bytes.
$CLIENT $S read $BAR2 0x1000 16 >/tmp/read.out 2>&1
check reactivated "$(grep -m1 'SDCLIENT read' /tmp/read.out || tail -n 2 /tmp/read.out | tr '\n' ' '); $(systemctl is-active $U@gpu0.service)" \
  sh -c "grep -q 'SDCLIENT read $PATTERN' /tmp/read.out && [ '$(systemctl is-active $U@gpu0.service)' = active ]"

# ---------------------------------------------------------------------------- watchdog
wait_until 30 status_is $U@gpu0.service "waiting for a client"
OLD=$(prop $U@gpu0.service MainPID)
RESTARTS=$(prop $U@gpu0.service NRestarts)
t0=$(up)
kill -STOP "$OLD"
wait_until $((WATCHDOG_SEC * 4 + 60)) pid_changed "$OLD"
NEW=$(prop $U@gpu0.service MainPID)
info watchdog-time "stopped at $t0, new daemon at $(up)"
journalctl -q --no-pager -o short-monotonic -u $U@gpu0.service | grep -E 'Watchdog|Main process|restart|Started|Killing' | tail -n 6 | sed 's/^/SDINFO watchdog-journal /'

check watchdog-restart "pid $OLD -> $NEW, restarts $RESTARTS -> $(prop $U@gpu0.service NRestarts)" \
  sh -c "[ '$NEW' != '$OLD' ] && [ '$NEW' != 0 ] && ! kill -0 '$OLD' 2>/dev/null"
journalctl -q --no-pager -o cat -u $U@gpu0.service >/tmp/wd.out 2>&1
check watchdog-journal "$(grep -m1 -i 'watchdog timeout' /tmp/wd.out)" grep -qi 'watchdog timeout' /tmp/wd.out
wait_until 60 status_is $U@gpu0.service "waiting for a client"
$CLIENT $S read $BAR2 0x1000 16 >/tmp/read.out 2>&1
check watchdog-same-memory "$(grep -m1 'SDCLIENT read' /tmp/read.out || tail -n 2 /tmp/read.out | tr '\n' ' ')" \
  grep -q "SDCLIENT read $PATTERN" /tmp/read.out
systemctl stop $U@gpu0.service

# refused INSTANCE NAME TEXT: the hardened unit cannot start INSTANCE; the daemon says why
# in one line holding TEXT (one start: systemctl start returns at the first failure, and
# the stop right after it cancels the restarts).
refused() {
  systemctl start $U@$1.service >/dev/null 2>&1
  rc=$?
  systemctl stop $U@$1.socket $U@$1.service 2>/dev/null
  check $2-refused "systemctl start: exit $rc" [ $rc != 0 ]
  journalctl -q --no-pager -o cat _SYSTEMD_UNIT=$U@$1.service | sort | uniq -c >/tmp/refused.out
  sed "s/^/SDINFO $2-refused-line /" /tmp/refused.out
  check $2-refused-one-line "$(wc -l </tmp/refused.out) distinct line(s)" \
    sh -c "[ \$(wc -l </tmp/refused.out) = 1 ] && grep -q '$3' /tmp/refused.out"
  systemctl status --no-pager $U@$1.service >/tmp/status-refused.out 2>&1
  check $2-refused-status "$(grep -m1 'nvgrace-vfio-user:' /tmp/status-refused.out | cut -c1-200)" grep -q "$3" /tmp/status-refused.out
  systemctl reset-failed $U@$1.service $U@$1.socket 2>/dev/null
}
# with_dropin INSTANCE FILE: the shipped drop-in FILE for INSTANCE, its socket started.
with_dropin() {
  mkdir -p /etc/systemd/system/$U@$1.service.d
  cp $P/systemd/drop-ins/$2 /etc/systemd/system/$U@$1.service.d/
  systemctl daemon-reload
  systemctl start $U@$1.socket
}

# --------------------------------------------------------------------- /dev/mem drop-in
info time-devmem "$(up)"
# mem0 serves the physical range the kernel was booted to reserve (memmap=SIZE$ADDR).
cat >/etc/nvgrace-vfio-user/mem0.env <<EOF
NVGRACE_VFIO_USER_APERTURE_PATH=/dev/mem
NVGRACE_VFIO_USER_APERTURE_BASE=$DEVMEM_BASE
NVGRACE_VFIO_USER_APERTURE_SIZE=$DEVMEM_SIZE
EOF
refused mem0 devmem devmem.conf
with_dropin mem0 devmem.conf
M=/run/nvgrace-vfio-user/mem0.sock
# Bytes put into the physical range from outside the daemon are read through it, and
# bytes the client writes land there.
printf '\021\042\063\104\336\255\276\357' | dd of=/dev/mem bs=8 seek=$((DEVMEM_BASE / 8)) conv=notrunc status=none
$CLIENT $M read $BAR2 0 8 write $BAR2 0x2000 c0ffee0012345678 >/tmp/mem.out 2>&1
check devmem-serves-read "$(grep -m1 'SDCLIENT read' /tmp/mem.out || tail -n 2 /tmp/mem.out | tr '\n' ' ')" \
  grep -q 'SDCLIENT read 11223344deadbeef' /tmp/mem.out
got=$(dd if=/dev/mem bs=8 skip=$(((DEVMEM_BASE + 0x2000) / 8)) count=1 status=none | od -An -tx1 | tr -d ' \n')
check devmem-serves-write "physical $(printf '0x%x' $((DEVMEM_BASE + 0x2000))): $got" [ "$got" = c0ffee0012345678 ]
journalctl -q --no-pager -o cat _SYSTEMD_UNIT=$U@mem0.service >/tmp/mem-journal.out
check devmem-backing "$(grep -o '"backing":{[^}]*}' /tmp/mem-journal.out | head -n 1)" grep -q '"kind":"dev-mem"' /tmp/mem-journal.out
systemctl stop $U@mem0.socket $U@mem0.service

# ------------------------------------------------------------ vfio.conf: a sysfs BAR0
info time-sysfs "$(up)"
# QEMU's edu device, bound to no driver, lends its registers: --bar0 sysfs:BDF writes the
# device's sysfs `enable` and maps its resource0 read-write.
EDU=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor):$(cat $d/device)" = "0x1234:0x11e8" ] && EDU=$(basename $d)
done
info edu "$EDU"
printf 'NVGRACE_VFIO_USER_BAR0=sysfs:%s\nNVGRACE_VFIO_USER_APERTURE_SIZE=2M\n' "$EDU" >/etc/nvgrace-vfio-user/edu0.env
# The daemon may not write `enable` (the kernel asks for CAP_SYS_ADMIN)...
refused edu0 sysfs CAP_SYS_ADMIN
# ...so the operator enables it first (as root); then the hardened unit serves its
# resource0 without any drop-in...
echo 1 >/sys/bus/pci/devices/$EDU/enable
systemctl start $U@edu0.socket
$CLIENT /run/nvgrace-vfio-user/edu0.sock read $BAR0 0 4 >/tmp/edu.out 2>&1
check sysfs-enabled-serves "$(grep -m1 'SDCLIENT read' /tmp/edu.out || tail -n 2 /tmp/edu.out | tr '\n' ' ')" \
  grep -q 'SDCLIENT read ed000001' /tmp/edu.out
EPID=$(prop $U@edu0.service MainPID)
info sysfs-mount "$(awk '$5 == "/sys" { print $5, $6 }' /proc/$EPID/mountinfo 2>&1 | tail -n 1); resource0 fd: $(ls -l /proc/$EPID/fd 2>/dev/null | grep -c resource0)"
systemctl stop $U@edu0.socket $U@edu0.service
# ...and so it does with vfio.conf.
with_dropin edu0 vfio.conf
# edu's identification register: 0x010000ed
$CLIENT /run/nvgrace-vfio-user/edu0.sock read $BAR0 0 4 >/tmp/edu.out 2>&1
check sysfs-serves-registers "$(grep -m1 'SDCLIENT read' /tmp/edu.out || tail -n 2 /tmp/edu.out | tr '\n' ' ')" \
  grep -q 'SDCLIENT read ed000001' /tmp/edu.out
systemctl stop $U@edu0.socket $U@edu0.service

info time-done "$(up)"
echo "SDCHECK DONE"
