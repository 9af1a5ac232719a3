//! (being written) Debian's kernel and a busybox initramfs that registers itself.
