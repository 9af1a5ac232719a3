//! TFTP (work in progress).
