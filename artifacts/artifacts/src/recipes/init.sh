#!/bin/sh
# agar guest /init: the initramfs side of docs/src/guest-contract.md.
# Runs as PID 1 from the agar initramfs (busybox-static). Edits here change the initramfs
# bytes: refresh artifacts.lock with `agar artifacts restore --update-lock`.

export PATH=/sbin:/bin
/bin/busybox --install -s /bin

mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() {
    echo "agar-init: $*"
}

modules=""
poweroff_after_ready=0
agent_dev=/dev/ttyS1
for word in $(cat /proc/cmdline); do
    case "$word" in
        agar.modules=*) modules=$(echo "${word#agar.modules=}" | tr ',' ' ') ;;
        agar.poweroff) poweroff_after_ready=1 ;;
        agar.agent=*) agent_dev="${word#agar.agent=}" ;;
    esac
done

release=$(uname -r)

# Whether a module (name with `_`) is built into the kernel.
is_builtin() {
    tr '-' '_' < "/lib/modules/$release/modules.builtin" | grep -q "/$1\.ko\$"
}

# Loads one module and its dependencies (modules.dep); built-in modules count as loaded.
load() {
    name=$(echo "$1" | tr '-' '_')
    if [ -d "/sys/module/$name" ] || is_builtin "$name" || modprobe "$1" 2>/dev/null; then
        say "loaded $1"
    else
        say "failed $1"
    fi
}

load pvpanic-mmio
for m in $modules; do
    load "$m"
done

# The readiness marker (exact line), then the kernel release.
echo "agar-init: ready"
uname -r

if [ "$poweroff_after_ready" = 1 ]; then
    poweroff -f
fi

if [ -x /sbin/agar-agent ]; then
    stty -F "$agent_dev" raw -echo 2>/dev/null
    while true; do
        /sbin/agar-agent "$agent_dev"
        say "agent exited with status $?; restarting"
        sleep 1
    done
fi

setsid cttyhack sh
poweroff -f
