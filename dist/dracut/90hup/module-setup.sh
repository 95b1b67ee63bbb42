#!/bin/bash
# dracut module: hup's pending apply in a dracut initramfs (docs/initramfs-integration.md).
# Installed as /usr/lib/dracut/modules.d/90hup/ (with hup-apply-pending.sh beside it).

# Always included once installed: a missing binary or configuration fails the build in
# install(), as the initramfs-tools hook does, instead of leaving hup out unnoticed.
check() {
    return 0
}

depends() {
    return 0
}

install() {
    if [[ ! -x /usr/bin/hup ]]; then
        dfatal "hup: /usr/bin/hup is missing or not executable (install the static hup binary there)"
        # dracut ignores install()'s status: stop the build, as the initramfs-tools hook does.
        exit 1
    fi
    if [[ ! -f /etc/hup/system.json ]]; then
        dfatal "hup: /etc/hup/system.json is missing (the device configuration apply-pending reads)"
        exit 1
    fi
    inst_binary /usr/bin/hup
    inst_simple /etc/hup/system.json
    # The uboot backend switches slots through the U-Boot environment fw_env.config locates.
    if grep -Eq '"boot_backend"[[:space:]]*:[[:space:]]*"uboot"' /etc/hup/system.json; then
        local fw_env
        fw_env=$(sed -n 's/.*"fw_env_config"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' /etc/hup/system.json | head -n 1)
        [[ -n $fw_env ]] || fw_env=/etc/fw_env.config
        if [[ ! -f $fw_env ]]; then
            dfatal "hup: $fw_env is missing (the fw_env.config of the uboot backend in /etc/hup/system.json)"
            exit 1
        fi
        inst_simple "$fw_env"
    fi
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
