#!/usr/bin/env python3
"""Empty eBPF programs, for the datapath benchmarks' floor: what merely
having a program at webb's hooks costs, whatever the program does.

  empty_programs.py attach IFACES CGROUP|- SECONDS
      attaches a program that returns at once to TC ingress and egress of
      each interface (comma-separated; TCX links) and, unless CGROUP is -,
      to cgroup_skb ingress and egress of CGROUP; holds them SECONDS, then
      exits, which detaches everything.
  empty_programs.py run FRAME REPEAT
      runs an empty sched_cls and an empty cgroup_skb program on FRAME (a
      file holding an Ethernet frame) REPEAT times with BPF_PROG_TEST_RUN
      and prints the kernel's average ns per run: the harness's own cost.

Raw bpf(2) calls through ctypes: no dependency beyond Python.
"""
import ctypes
import os
import socket
import struct
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
SYS_BPF = 321  # x86_64
BPF_PROG_LOAD, BPF_PROG_TEST_RUN, BPF_LINK_CREATE = 5, 10, 28
SCHED_CLS, CGROUP_SKB = 3, 8
TCX_INGRESS, TCX_EGRESS = 46, 47
CGROUP_INET_INGRESS, CGROUP_INET_EGRESS = 0, 1
KEEP = []


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 160)
    KEEP.append(buf)
    r = LIBC.syscall(SYS_BPF, cmd, buf, 160)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r, buf


def load(prog_type, ret):
    # r0 = ret; exit
    insns = struct.pack("<BBhi", 0xB7, 0, 0, ret) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns)
    lic = ctypes.create_string_buffer(b"GPL")
    KEEP.extend([code, lic])
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16].
    attr = struct.pack("<IIQQIIQII16s", prog_type, 2, ctypes.addressof(code),
                       ctypes.addressof(lic), 0, 0, 0, 0, 0, b"webb_floor")
    fd, _ = bpf(BPF_PROG_LOAD, attr)
    return fd


def link(prog_fd, target, attach_type):
    fd, _ = bpf(BPF_LINK_CREATE, struct.pack("<IIII", prog_fd, target, attach_type, 0))
    KEEP.append(fd)


def attach(ifaces, cgroup, seconds):
    tc = load(SCHED_CLS, -1)  # TCX_NEXT
    for name in ifaces.split(","):
        idx = socket.if_nametoindex(name)
        link(tc, idx, TCX_INGRESS)
        link(tc, idx, TCX_EGRESS)
    if cgroup != "-":
        cg = load(CGROUP_SKB, 1)  # allow
        fd = os.open(cgroup, os.O_RDONLY)
        KEEP.append(fd)
        link(cg, fd, CGROUP_INET_INGRESS)
        link(cg, fd, CGROUP_INET_EGRESS)
    print("attached", flush=True)
    time.sleep(seconds)


def run(frame_path, repeat):
    data = open(frame_path, "rb").read()
    buf = ctypes.create_string_buffer(data)
    for name, prog_type, ret in (("sched_cls", SCHED_CLS, -1), ("cgroup_skb", CGROUP_SKB, 1)):
        fd = load(prog_type, ret)
        attr = struct.pack("<IIIIQQII", fd, 0, len(data), 0, ctypes.addressof(buf), 0, repeat, 0)
        _, out = bpf(BPF_PROG_TEST_RUN, attr)
        print("empty %s: %d ns per run" % (name, struct.unpack_from("<I", out, 36)[0]))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "attach":
        attach(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
