//! Certificate settings of a connection (`local.certs`, `local.key`,
//! `remote.cacerts`, `remote.crls`, DN identities): loaded at config time
//! with file:line:field errors. Certificates are made with strongSwan's `pki`
//! (strongswan-pki; scripts/setup.sh installs it); without it the tests skip.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use wisp_gateway::config::Config;
use wisp_policy_api::IdType;
use wisp_testbed::pki::{self, Ca, IssueOpts, KeyType};

fn have_pki(test: &str) -> bool {
    if pki::available() {
        return true;
    }
    eprintln!("{test}: skipped, {} missing (apt install strongswan-pki)", pki::PKI);
    false
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    /// A CA, our certificate (`gw`) and key, and a CRL.
    fn new(kt: KeyType) -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::root(dir.path(), "ca", kt, "C=CH, O=wisp test, CN=test CA").unwrap();
        ca.issue("gw", kt, "C=CH, O=wisp test, CN=gw.wisp.test", &IssueOpts { sans: vec!["gw.wisp.test".into()], ..Default::default() })
            .unwrap();
        ca.crl("ca", &[]).unwrap();
        World { dir }
    }
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
    fn config(&self, conn: &str) -> String {
        format!(
            "[connections.b]\nlocal_addrs = [\"10.99.0.1\"]\nremote_addrs = [\"10.99.0.2\"]\nremote.id = \"b.wisp.test\"\n{conn}\n[connections.b.children.net]\nlocal_ts = [\"10.98.1.0/24\"]\nremote_ts = [\"10.98.2.0/24\"]\n"
        )
    }
    fn good(&self) -> String {
        self.config(&format!(
            "local.certs = {:?}\nlocal.key = {:?}\nremote.cacerts = [{:?}]\nremote.crls = [{:?}]",
            self.path("gw.pem"),
            self.path("gw-key.pem"),
            self.path("ca.pem"),
            self.path("ca.crl")
        ))
    }
    fn load(&self, text: &str) -> Result<Config, wisp_gateway::config::ConfigError> {
        let p = self.dir.path().join("w.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(&p)
    }
}

#[test]
fn certificates_load_and_set_the_identity() {
    if !have_pki("certificates_load_and_set_the_identity") {
        return;
    }
    for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519, KeyType::Rsa(2048)] {
        let w = World::new(kt);
        let cfg = w.load(&w.good()).unwrap_or_else(|e| panic!("{kt:?}: {e}"));
        let c = &cfg.connections["b"];
        // No PSK anywhere: both sides use certificates.
        assert!(c.auth.secret().is_none());
        let id = c.local_identity();
        assert_eq!(id.kind, IdType::DerAsn1Dn, "{kt:?}");
        assert_eq!(id.value, "CN=gw.wisp.test,O=wisp test,C=CH", "{kt:?}: the certificate's subject, RFC 4514");
        let ec = wisp_gateway::driver::engine_conn(&cfg, "b", c).unwrap();
        assert!(matches!(ec.local_auth, wisp_ike::config::LocalAuth::Pubkey(_)));
        assert!(matches!(ec.remote_auth, wisp_ike::config::RemoteAuth::Pubkey(_)));
        // A changed CRL is a changed connection (a reload reauthenticates).
        let before = format!("{:?}", ec.remote_auth);
        std::fs::write(w.path("ca.crl"), std::fs::read(w.path("gw.pem")).unwrap()).unwrap();
        assert!(w.load(&w.good()).is_err(), "a certificate where a CRL belongs is an error");
        let ca = Ca { key: w.path("ca-key.pem").into(), cert: w.path("ca.pem").into(), kt, dir: w.dir.path().into() };
        ca.crl("ca", &[Path::new(&w.path("gw.pem"))]).unwrap();
        let cfg2 = w.load(&w.good()).unwrap();
        let ec2 = wisp_gateway::driver::engine_conn(&cfg2, "b", &cfg2.connections["b"]).unwrap();
        assert_ne!(before, format!("{:?}", ec2.remote_auth));
    }
}

#[test]
fn dn_identities_from_config() {
    if !have_pki("dn_identities_from_config") {
        return;
    }
    let w = World::new(KeyType::EcdsaP256);
    let text = w.good().replace("remote.id = \"b.wisp.test\"", "remote.id = \"C=CH, O=wisp test, CN=b.wisp.test\"");
    let cfg = w.load(&text).unwrap();
    let ec = wisp_gateway::driver::engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
    let id = ec.remote_id.exact().expect("an exact DN");
    assert_eq!((id.kind, id.value.as_str()), (IdType::DerAsn1Dn, "CN=b.wisp.test,O=wisp test,C=CH"));
    let bad = w.good().replace("remote.id = \"b.wisp.test\"", "remote.id = \"C=CH, XYZ=1\"");
    let e = w.load(&bad).unwrap_err();
    assert_eq!(e.field, "connections.b.remote.id", "{e}");
    assert!(e.line > 0, "{e}");
}

#[test]
fn bad_credentials_are_errors_naming_the_field() {
    if !have_pki("bad_credentials_are_errors_naming_the_field") {
        return;
    }
    let w = World::new(KeyType::EcdsaP256);
    let expect = |text: String, field: &str, words: &str| {
        let e = w.load(&text).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(words), "{field}: {e}");
    };
    // The key readable by others.
    std::fs::set_permissions(w.path("gw-key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    expect(w.good(), "connections.b.local.key", "0644");
    std::fs::set_permissions(w.path("gw-key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another key than the certificate's.
    pki::gen_key(Path::new(&w.path("other-key.pem")), KeyType::EcdsaP256).unwrap();
    expect(w.good().replace("gw-key.pem", "other-key.pem"), "connections.b.local.key", "not the key of certificate");
    // A missing certificate file, garbage in it, no key.
    expect(w.good().replace("gw.pem", "nope.pem"), "connections.b.local.certs", "nope.pem");
    std::fs::write(w.path("junk.pem"), b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    expect(w.good().replace("gw.pem", "junk.pem"), "connections.b.local.certs", "junk.pem");
    let no_key: String = w.good().lines().filter(|l| !l.starts_with("local.key")).collect::<Vec<_>>().join("\n");
    expect(no_key, "connections.b.local.key", "local.key");
    // Certificates for the peer without CAs to check them: it needs remote.cacerts.
    let no_ca = w.good().replace(&format!("remote.cacerts = [{:?}]", w.path("ca.pem")), "remote.auth = \"pubkey\"");
    expect(no_ca, "connections.b.remote.cacerts", "remote.cacerts");
    // The peer authenticates with a PSK: then the PSK is required.
    let psk_peer: String = w.good().lines().filter(|l| !l.starts_with("remote.")).collect::<Vec<_>>().join("\n");
    let psk_peer = psk_peer.replace("local_addrs", "remote.id = \"b.wisp.test\"\nlocal_addrs");
    expect(psk_peer.clone(), "connections.b.auth", "psk");
    assert!(w.load(&psk_peer.replace("local_addrs", "auth.psk = \"0123456789abcdef\"\nlocal_addrs")).is_ok());
    // A CA directory: every file in it; a directory with a stray file fails naming it.
    let cadir = w.dir.path().join("cas");
    std::fs::create_dir(&cadir).unwrap();
    std::fs::copy(w.path("ca.pem"), cadir.join("ca.pem")).unwrap();
    let with_dir = w.good().replace(&w.path("ca.pem"), &cadir.display().to_string());
    assert!(w.load(&with_dir).is_ok());
    std::fs::write(cadir.join("notes.txt"), b"not a certificate").unwrap();
    expect(with_dir, "connections.b.remote.cacerts", "notes.txt");
}

/// `remote.auth = eap-mschapv2` with `[secrets] eap_file`: the users are
/// read (mode checked), `remote.eap_id` maps to the engine, and the
/// mistakes a user makes are errors that name the field.
#[test]
fn eap_configuration_and_its_errors() {
    if !have_pki("eap_configuration_and_its_errors") {
        return;
    }
    let w = World::new(KeyType::EcdsaP256);
    let secrets = w.dir.path().join("users.secrets");
    std::fs::write(&secrets, "alice = \"pw one\"\n\"bob@example.org\" = \"pw two\"\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ours = format!("local.certs = {:?}\nlocal.key = {:?}", w.path("gw.pem"), w.path("gw-key.pem"));
    let tail = format!("\n[secrets]\neap_file = {:?}\n", secrets.display().to_string());
    let good = |extra: &str| format!("{}{tail}", w.config(&format!("{ours}\nremote.auth = \"eap-mschapv2\"\n{extra}")));
    let cfg = w.load(&good("remote.eap_id = \"%any\"")).unwrap();
    assert_eq!(cfg.eap_users.len(), 2);
    assert_eq!(cfg.eap_users.password("bob@example.org").as_deref().map(String::as_str), Some("pw two"));
    assert!(!format!("{cfg:?}").contains("pw one"), "secrets never printed");
    let ec = wisp_gateway::driver::engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
    let wisp_ike::config::RemoteAuth::Eap(e) = &ec.remote_auth else { panic!("{:?}", ec.remote_auth) };
    assert_eq!((e.method, &e.eap_id), (wisp_ike::eap::Method::MsChapV2, &wisp_ike::eap::EapId::Any));
    assert!(ec.validate().is_ok());
    let cfg = w.load(&good("")).unwrap();
    let ec = wisp_gateway::driver::engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
    assert!(matches!(&ec.remote_auth, wisp_ike::config::RemoteAuth::Eap(e) if e.eap_id == wisp_ike::eap::EapId::Ike));

    // EAP-TLS: the client certificates' CAs from remote.cacerts; no secrets file needed.
    let tls = w.config(&format!("{ours}\nremote.auth = \"eap-tls\"\nremote.cacerts = [{:?}]", w.path("ca.pem")));
    let cfg = w.load(&tls).unwrap();
    let ec = wisp_gateway::driver::engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
    assert!(
        matches!(&ec.remote_auth, wisp_ike::config::RemoteAuth::Eap(e) if e.method == wisp_ike::eap::Method::Tls && e.tls_trust.is_some())
    );
    let e = w.load(&w.config(&format!("{ours}\nremote.auth = \"eap-tls\""))).unwrap_err();
    assert_eq!(e.field, "connections.b.remote.cacerts", "{e}");

    let err = |text: String, field: &str, msg: &str| {
        let e = w.load(&text).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(msg), "{e}");
    };
    // No secrets file.
    err(w.config(&format!("{ours}\nremote.auth = \"eap-mschapv2\"")), "connections.b.remote.auth", "[secrets] eap_file");
    // No certificate of ours: the EAP server signs first.
    err(
        format!("{}{tail}", w.config("remote.auth = \"eap-mschapv2\"\nauth.psk = \"x\"")),
        "connections.b.local.auth",
        "certificate of ours",
    );
    // wisp is not an EAP client.
    err(
        format!("{}{tail}", w.config(&format!("{ours}\nlocal.auth = \"eap-mschapv2\""))),
        "connections.b.local.auth",
        "does not authenticate itself by EAP",
    );
    // eap_id without EAP.
    err(
        w.good().replace("remote.crls", "remote.eap_id = \"%any\"\nremote.crls"),
        "connections.b.remote.eap_id",
        "only with remote.auth = eap-*",
    );
    // A secrets file others may read.
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    err(good(""), "secrets.eap_file", "mode 0644");
    // Not TOML of strings; the message does not quote the file.
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&secrets, "alice = \"ok\"\nbob = s3cr3t-unquoted\n").unwrap();
    let e = w.load(&good("")).unwrap_err();
    assert!(e.to_string().contains("line 2") && !e.to_string().contains("s3cr3t"), "{e}");
    std::fs::write(&secrets, "alice = 5\n").unwrap();
    err(good(""), "secrets.eap_file", "must be a non-empty string");
}
