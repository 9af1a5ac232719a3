//! DHCP and proxyDHCP (work in progress).
