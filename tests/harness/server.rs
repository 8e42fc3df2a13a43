//! The service started in this process on `127.0.0.1:0`, as `handoff serve`
//! starts it: a configuration file with `env:` secrets, a database of the
//! test's own, the bundled rules and templates (or the test's rules), and
//! the WhatsApp sandbox where no number has a token.

use super::{root, Api, Db};
use handoff::config::{Config, Overrides};
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// The service over real HTTP, stopped when dropped.
pub struct Server {
    api: Api,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _config_dir: tempfile::TempDir,
}

impl Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// Starts the service on `db` with the configuration `toml` (its
    /// `env:NAME` secrets from `env`), the bundled rules and templates.
    pub async fn start(db: &Db, toml: &str, env: &[(&str, &str)]) -> Server {
        Server::setup(db, toml, env).start().await
    }

    /// The same, with more to say before it starts.
    pub fn setup<'a>(db: &'a Db, toml: &str, env: &[(&str, &str)]) -> Setup<'a> {
        Setup {
            db,
            toml: toml.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rules: root().join("rules"),
            edits: Vec::new(),
            password: String::new(),
            operators: Vec::new(),
        }
    }
}

/// A change to the loaded configuration.
type Edit<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// What a server starts with; [`Setup::start`] starts it.
pub struct Setup<'a> {
    db: &'a Db,
    toml: String,
    env: BTreeMap<String, String>,
    rules: PathBuf,
    edits: Vec<Edit<'a>>,
    password: String,
    operators: Vec<(String, String, String)>,
}

impl<'a> Setup<'a> {
    /// The rules in `dir` rather than the bundled ones.
    pub fn rules(mut self, dir: &Path) -> Self {
        self.rules = dir.to_path_buf();
        self
    }

    /// Changes the loaded configuration (what a file cannot say, or a check
    /// of what it says).
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Inbox operators `(account, email, name)`, each with `password`.
    pub fn operators(mut self, password: &str, operators: &[(&str, &str, &str)]) -> Self {
        self.password = password.to_string();
        self.operators = operators
            .iter()
            .map(|(a, e, n)| (a.to_string(), e.to_string(), n.to_string()))
            .collect();
        self
    }

    pub async fn start(self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handoff.toml");
        std::fs::write(&file, &self.toml).unwrap();
        let flags = Overrides {
            listen: Some("127.0.0.1:0".into()),
            database: Some(self.db.url()),
            rules: Some(self.rules),
        };
        let mut config = Config::load(Some(&file), &self.env, &flags).unwrap();
        config.templates = Some(root().join("templates"));
        for edit in self.edits {
            edit(&mut config);
        }
        let state = handoff::server::state(config).await.unwrap();
        if !self.operators.is_empty() {
            let hash = handoff::server::inbox::hash_password(&self.password).unwrap();
            for (account, email, name) in &self.operators {
                state
                    .store
                    .create_operator(account, email, name, &hash)
                    .await
                    .unwrap();
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(handoff::server::serve(state, listener, async {
            let _ = rx.await;
        }));
        Server {
            api: Api::new(base),
            _shutdown: tx,
            _config_dir: dir,
        }
    }
}
