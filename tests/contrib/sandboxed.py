"""Run a command under the node unit's kernel sandbox without systemd: no new privileges, no writable-and-executable
memory (the prctl systemd >= 253 itself uses for MemoryDenyWriteExecute=) and a seccomp allow list of the unit's
system calls (refused ones fail with EPERM, as SystemCallErrorNumber=EPERM makes them).

Usage: python sandboxed.py SYSCALLS_FILE COMMAND [ARG...]   (SYSCALLS_FILE: one system call name a line)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000


def main() -> None:
    allowed, command = Path(sys.argv[1]).read_text().split(), sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"sandboxed: PR_SET_NO_NEW_PRIVS failed: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"sandboxed: PR_SET_MDWE failed (kernel older than 6.3?): {os.strerror(ctypes.get_errno())}")
    seccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = seccomp.seccomp_init(SCMP_ACT_ERRNO | errno.EPERM)
    for name in allowed:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # negative: not a system call of this architecture
            seccomp.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, number, 0)
    if seccomp.seccomp_load(ctx) != 0:
        sys.exit("sandboxed: seccomp_load failed")
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    print(f"sandboxed: mdwe={libc.prctl(PR_GET_MDWE, 0, 0, 0, 0)} seccomp={status['Seccomp'].strip()} "
          f"no_new_privs={status['NoNewPrivs'].strip()}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
