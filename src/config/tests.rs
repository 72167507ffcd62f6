use std::io::Write;

use figment::Jail;

use super::*;

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    Config::load_from(Some(file.path()), Env::prefixed("USAGE_AUTHZ_TEST_UNUSED_"), None)
}

#[test]
fn defaults_without_a_file() {
    let config = Config::load_from(None, Env::prefixed("USAGE_AUTHZ_TEST_UNUSED_"), None).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.usage_check.timeout_ms, 1500);
    assert_eq!(config.cache.max_entries, 1_000_000);
    assert_eq!(config.routes.auth_methods, vec!["GET", "HEAD", "POST"]);
}

#[test]
fn file_values_apply() {
    let config = load_toml(
        r#"
        [server]
        grpc_addr = "127.0.0.1:7000"
        [cache]
        ok_ttl_secs = 5
        [routes]
        skip_paths = ["/up"]
        "#,
    )
    .unwrap();
    assert_eq!(config.server.grpc_addr.to_string(), "127.0.0.1:7000");
    assert_eq!(config.cache.ok_ttl_secs, 5);
    assert_eq!(config.cache.deny_ttl_secs, 60);
    assert_eq!(config.routes.skip_paths, vec!["/up"]);
}

#[test]
fn environment_overrides_file() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[cache]\nok_ttl_secs = 5\n")?;
        jail.set_env("USAGE_AUTHZ_CACHE__OK_TTL_SECS", "600");
        jail.set_env("USAGE_AUTHZ_ROUTES__AUTH_METHODS", "[GET, POST]");
        let config = Config::load(Some(Path::new("c.toml"))).unwrap();
        assert_eq!(config.cache.ok_ttl_secs, 600);
        assert_eq!(config.routes.auth_methods, vec!["GET", "POST"]);
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    let rows = [
        ("[cache]\nok_ttl_secs = \"soon\"\n", "cache.ok_ttl_secs"),
        ("[cache]\nmax_entries = 0\n", "cache.max_entries"),
        ("[cache]\nbogus = 1\n", "bogus"),
        ("[nosuchsection]\nx = 1\n", "nosuchsection"),
        ("[server]\ngrpc_addr = \"localhost\"\n", "server.grpc_addr"),
        ("[usage_check]\nurl = \"not a url\"\n", "usage_check.url"),
        (
            "[usage_check]\nurl = \"ftp://example.com/x\"\n",
            "usage_check.url",
        ),
        ("[routes]\nauth_methods = []\n", "routes.auth_methods"),
        ("[routes]\nauth_methods = [\"G ET\"]\n", "routes.auth_methods"),
        ("[routes]\nskip_prefixes = [\"static\"]\n", "routes.skip_prefixes"),
        ("[routes]\nskip_paths = [\"docs\"]\n", "routes.skip_paths"),
        ("[headers]\nworkspace = \"X Workspace\"\n", "headers.workspace"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[keys]\nmax_length = -1\n", "keys.max_length"),
    ];
    for (toml, key) in rows {
        let error = load_toml(toml).expect_err(toml).to_string();
        assert!(
            error.contains(key),
            "error for {toml:?} does not name {key}: {error}"
        );
    }
}

#[test]
fn every_problem_is_reported() {
    let error = load_toml("[cache]\nmax_entries = 0\nok_ttl_secs = 0\n").unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
}

#[test]
fn missing_file_is_an_error() {
    let error = Config::load_from(
        Some(Path::new("/nonexistent/usage-authz.toml")),
        Env::prefixed("USAGE_AUTHZ_TEST_UNUSED_"),
        None,
    )
    .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/usage-authz.toml"));
}

#[test]
fn unknown_environment_key_is_an_error() {
    Jail::expect_with(|jail| {
        jail.set_env("USAGE_AUTHZ_CACHE__OK_TTL", "5");
        let error = Config::load(None).unwrap_err().to_string();
        assert!(error.contains("ok_ttl"), "{error}");
        Ok(())
    });
}

#[test]
fn log_string_hides_url_credentials() {
    let mut config = Config::default();
    config.usage_check.url = "https://user:pass@example.com/check".into();
    let shown = config.to_log_string();
    assert!(!shown.contains("pass"), "{shown}");
    assert!(shown.contains("example.com/check"));
}

#[test]
fn numeric_admin_token_from_environment_stays_text() {
    Jail::expect_with(|jail| {
        jail.set_env("USAGE_AUTHZ_ADMIN__TOKEN", "12345678901234567890");
        let config = Config::load(None).unwrap();
        assert_eq!(config.admin.token.unwrap().expose(), "12345678901234567890");
        Ok(())
    });
}

#[test]
fn admin_token_from_file() {
    Jail::expect_with(|jail| {
        jail.create_file("token", "file-token-0123456789\n")?;
        jail.create_file(
            "c.toml",
            "[admin]\ntoken_file = \"token\"\naddr = \"0.0.0.0:9003\"\n",
        )?;
        let config = Config::load(Some(Path::new("c.toml"))).unwrap();
        assert_eq!(config.admin.token.unwrap().expose(), "file-token-0123456789");
        Ok(())
    });
}

#[test]
fn admin_token_rules() {
    let rows = [
        (
            "[admin]\naddr = \"0.0.0.0:9003\"\n",
            Some("admin.addr = 0.0.0.0:9003"),
        ),
        ("[admin]\naddr = \"127.0.0.1:9003\"\n", None),
        ("[admin]\naddr = \"[::1]:9003\"\n", None),
        (
            "[admin]\naddr = \"0.0.0.0:9003\"\ntoken = \"0123456789abcdef\"\n",
            None,
        ),
        ("[admin]\ntoken = \"short\"\n", Some("admin.token is shorter")),
        (
            "[admin]\ntoken = \"0123456789abcdef\"\ntoken_file = \"/etc/hostname\"\n",
            Some("both set"),
        ),
        (
            "[admin]\ntoken_file = \"/nonexistent/token\"\n",
            Some("admin.token_file"),
        ),
    ];
    for (toml, expected) in rows {
        match (load_toml(toml), expected) {
            (Ok(_), None) => {}
            (Err(error), Some(text)) => assert!(error.to_string().contains(text), "{toml:?}: {error}"),
            (result, _) => panic!("{toml:?}: unexpected {result:?}"),
        }
    }
}
