#![allow(clippy::unwrap_used)] // a failed unwrap is the test's failure report

use super::*;

#[test]
fn port_ranges() {
    let cases = [
        ("1", Ok((1, 1))),
        ("65535", Ok((65535, 65535))),
        ("8000-8100", Ok((8000, 8100))),
        (" 80 - 81 ", Ok((80, 81))),
        ("0", Err("port 0 is not a port (ports are 1-65535)")),
        ("0-10", Err("port 0 is not a port (ports are 1-65535)")),
        ("65536", Err("port 65536 is above 65535")),
        ("99999999999", Err("port 99999999999 is above 65535")),
        ("10-9", Err("range 10-9 is reversed (write 9-10)")),
        (
            "+80",
            Err("`+80` is not a port or range (write `5432` or `8000-8100`)"),
        ),
        (
            "1-2-3",
            Err("`1-2-3` is not a port or range (write `5432` or `8000-8100`)"),
        ),
    ];
    for (input, want) in cases {
        let got = PortRange::parse(input).map(|r| (r.lo(), r.hi()));
        assert_eq!(got, want.map_err(str::to_string), "{input:?}");
    }
    assert_eq!(PortRange::new(5, 5).unwrap().to_string(), "5");
    assert_eq!(PortRange::new(5, 9).unwrap().to_string(), "5-9");
}

#[test]
fn cidrs() {
    let c = |s: &str| Cidr::parse(s).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(c("10.8.0.0/16").contains(ip("10.8.255.255")));
    assert!(!c("10.8.0.0/16").contains(ip("10.9.0.0")));
    assert!(c("10.8.0.0/16").contains(ip("::ffff:10.8.1.2")));
    assert!(!c("10.8.0.0/16").contains(ip("fd00::1")));
    assert!(c("0.0.0.0/0").contains(ip("1.2.3.4")));
    assert!(!c("0.0.0.0/0").contains(ip("::1")));
    assert!(c("::/0").contains(ip("::1")));
    assert!(c("fd00::/8").contains(ip("fdff::1")));
    assert!(!c("fd00::/8").contains(ip("fe00::1")));
    assert!(c("10.0.0.7").contains(ip("10.0.0.7")));
    assert!(!c("10.0.0.7").contains(ip("10.0.0.6")));
    assert_eq!(c("10.0.0.7").to_string(), "10.0.0.7/32");
    assert_eq!(Cidr::host(ip("::ffff:10.0.0.7")).to_string(), "10.0.0.7/32");
    assert!(Cidr::parse("10.0.0.0/+8").is_err());
    assert!(Cidr::parse("10.0.0.0/").is_err());
}

#[test]
fn spiffe_patterns() {
    let cases = [
        ("spiffe://td/a/b", "spiffe://td/a/b", true),
        ("spiffe://td/a/b", "spiffe://td/a/b/c", false),
        ("spiffe://td/a/*", "spiffe://td/a/b", true),
        ("spiffe://td/a/*", "spiffe://td/a/b/c/d", true),
        ("spiffe://td/a/*", "spiffe://td/a", false),
        ("spiffe://td/a/*", "spiffe://td/ab/c", false),
        ("spiffe://td/a/*", "spiffe://other/a/b", false),
        ("spiffe://td/*/b", "spiffe://td/x/b", true),
        ("spiffe://td/*/b", "spiffe://td/x/y/b", false),
        ("spiffe://td/*/b", "spiffe://td/x/b/c", false),
        ("spiffe://td/a-*-z/b", "spiffe://td/a-mid-z/b", true),
        ("spiffe://td/a-*-z/b", "spiffe://td/a--z/b", true),
        ("spiffe://td/a-*-z/b", "spiffe://td/a-z/b", false),
        ("spiffe://td/web-*", "spiffe://td/web-1", true),
        ("spiffe://td/web-*", "spiffe://td/web-1/x", false),
        ("spiffe://td/*", "spiffe://td/x/y", true),
        ("spiffe://td/*", "spiffe://td", false),
    ];
    for (pattern, id, want) in cases {
        let p = SpiffePattern::parse(pattern).unwrap();
        assert_eq!(p.matches(id), want, "{pattern} vs {id}");
        assert_eq!(p.to_string(), pattern);
    }
    let id = SpiffeId::new("spiffe://td/ns/a").unwrap();
    let exact = SpiffePattern::exact(&id);
    assert_eq!(exact, SpiffePattern::parse("spiffe://td/ns/a").unwrap());
    assert_eq!(exact.trust_domain().unwrap().name(), "td");
}

#[test]
fn image_globs() {
    let cases = [
        ("nginx:1.25", "nginx:1.25", true),
        ("nginx:1.25", "nginx:1.26", false),
        ("nginx:*", "nginx:1.25", true),
        ("nginx:*", "docker.io/library/nginx:1.25", false),
        ("*/nginx:*", "docker.io/library/nginx:1.25", true),
        ("*", "", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "acb", false),
    ];
    for (pattern, image, want) in cases {
        assert_eq!(
            ImagePattern::parse(pattern).unwrap().matches(image),
            want,
            "{pattern} vs {image}"
        );
    }
    assert!(ImagePattern::parse("a b").is_err());
    assert!(ImagePattern::parse("").is_err());
}

#[test]
fn names_and_labels() {
    assert_eq!(check_name("web-to-db_1.v2"), Ok(()));
    assert!(check_name("").is_err());
    assert!(check_name("-web").is_err());
    assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    assert_eq!(check_label_key("app.kubernetes.io/name"), Ok(()));
    assert_eq!(check_label_key("App_1"), Ok(()));
    assert!(check_label_key("a/b/c").is_err());
    assert!(check_label_key("example.com/").is_err());
    assert!(check_label_key(&"k".repeat(64)).is_err());
    assert_eq!(check_label_value(""), Ok(()));
    assert!(check_label_value("v_").is_err());
}
