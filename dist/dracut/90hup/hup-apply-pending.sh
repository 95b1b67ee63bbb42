#!/bin/sh
# dracut pre-mount hook (sourced by dracut's init): runs hup's pending apply before the
# root filesystem is mounted. With nothing pending hup writes nothing; after a successful
# apply it reboots the machine itself; on any other outcome the boot goes on.

if [ -x /usr/bin/hup ]; then
    /usr/bin/hup apply-pending || warn "hup: apply-pending exited with status $?; the boot continues"
fi
