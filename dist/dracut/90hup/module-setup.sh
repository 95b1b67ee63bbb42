#!/bin/bash
# dracut module: hup's pending apply in a dracut initramfs (docs/initramfs-integration.md).
# Installed as /usr/lib/dracut/modules.d/90hup/ (with hup-apply-pending.sh beside it).

# Included only where hup is installed, or when asked for (--add hup).
check() {
    require_binaries /usr/bin/hup || return 1
    [[ -f /etc/hup/system.json ]] || return 1
    return 0
}

depends() {
    return 0
}

install() {
    if [[ ! -x /usr/bin/hup ]]; then
        dfatal "hup: /usr/bin/hup is missing or not executable"
        return 1
    fi
    if [[ ! -f /etc/hup/system.json ]]; then
        dfatal "hup: /etc/hup/system.json is missing"
        return 1
    fi
    inst_binary /usr/bin/hup
    inst_simple /etc/hup/system.json
    local key
    local keys=0
    for key in /etc/hup/keys/*.pub; do
        [[ -f $key ]] || continue
        inst_simple "$key"
        keys=$((keys + 1))
    done
    if [[ $keys -eq 0 ]]; then
        dwarn "hup: no trusted keys in /etc/hup/keys: a staged update cannot be verified at boot"
    fi
    inst_hook pre-mount 90 "$moddir/hup-apply-pending.sh"
}
