//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers").

use std::fmt;

/// An IP protocol number / IPv6 next header value. Unknown values are ordinary values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    pub const ICMP: IpProtocol = IpProtocol(1);
    pub const IGMP: IpProtocol = IpProtocol(2);
    pub const TCP: IpProtocol = IpProtocol(6);
    pub const UDP: IpProtocol = IpProtocol(17);
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    pub const GRE: IpProtocol = IpProtocol(47);
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication header.
    pub const AH: IpProtocol = IpProtocol(51);
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
    pub const OSPF: IpProtocol = IpProtocol(89);
    pub const SCTP: IpProtocol = IpProtocol(132);
    pub const MOBILITY: IpProtocol = IpProtocol(135);
    pub const UDPLITE: IpProtocol = IpProtocol(136);
    pub const HIP: IpProtocol = IpProtocol(139);
    pub const SHIM6: IpProtocol = IpProtocol(140);

    /// True for the IPv6 extension headers the parser walks through to reach the upper
    /// layer (RFC 8200 section 4 and the IANA IPv6 extension header registry; ESP is not
    /// one of them here, since what follows it is encrypted).
    #[inline]
    pub fn is_ipv6_extension(self) -> bool {
        matches!(
            self,
            IpProtocol::HOPOPT
                | IpProtocol::IPV6_ROUTE
                | IpProtocol::IPV6_FRAG
                | IpProtocol::AH
                | IpProtocol::IPV6_OPTS
                | IpProtocol::MOBILITY
                | IpProtocol::HIP
                | IpProtocol::SHIM6
        )
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpProtocol({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_headers() {
        let walked: Vec<u8> = (0..=255u8)
            .filter(|p| IpProtocol(*p).is_ipv6_extension())
            .collect();
        assert_eq!(walked, [0, 43, 44, 51, 60, 135, 139, 140]);
    }
}
