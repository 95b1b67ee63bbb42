//! The DDI HTTP client: small JSON requests to the server over ureq and rustls, with the
//! same TLS roots and timeouts as `hup stage` (`crate::stage::http`), the device's token,
//! bounded answers and a bounded number of redirects.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::stage::http::{CONNECT_TIMEOUT, read_timeout, tls_config};

/// The largest answer read (a deployment with many artifacts is a few KiB).
pub const MAX_BODY: u64 = 1 << 20;
/// Redirects followed for one DDI request.
pub const MAX_REDIRECTS: u32 = 5;

/// A connection to one DDI server.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    authorization: Option<String>,
}

/// An HTTP answer that is not 2xx.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status} from {url}")]
pub struct HttpStatus {
    pub status: u16,
    pub url: String,
}

impl Client {
    /// `ca`: trust only this PEM file; `authorization`: the header value for every request.
    pub fn new(server: &str, ca: Option<&Path>, authorization: Option<String>) -> Result<Client> {
        let timeout = read_timeout();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(MAX_REDIRECTS)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_global(Some(timeout * 4))
            .user_agent(concat!("hup/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls_config(server, ca)?)
            .build()
            .into();
        Ok(Client {
            agent,
            authorization,
        })
    }

    /// The authorization header value (for the artifact download).
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// GET a JSON resource; its body.
    pub fn get(&self, url: &str) -> Result<Vec<u8>> {
        let mut req = self.agent.get(url).header("Accept", "application/hal+json");
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| request_error(url, e))?;
        body(url, resp)
    }

    /// POST (`put` false) or PUT a JSON body.
    pub fn send(&self, url: &str, put: bool, json: &[u8]) -> Result<()> {
        let mut req = if put {
            self.agent.put(url)
        } else {
            self.agent.post(url)
        }
        .header("Content-Type", "application/json");
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let resp = req.send(json).map_err(|e| request_error(url, e))?;
        body(url, resp).map(drop)
    }
}

fn request_error(url: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Timeout(_) => anyhow!(
            "{url}: the server did not answer within {:.1} s",
            read_timeout().as_secs_f64()
        ),
        ureq::Error::TooManyRedirects => {
            anyhow!("{url}: too many redirects (more than {MAX_REDIRECTS})")
        }
        e => anyhow!("{url}: {e}"),
    }
}

fn body(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(HttpStatus {
            status,
            url: url.to_string(),
        }
        .into());
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| request_error(url, e))
        .with_context(|| format!("reading the answer of {url}"))?;
    if bytes.len() as u64 > MAX_BODY {
        bail!("{url}: answer larger than {MAX_BODY} bytes");
    }
    Ok(bytes)
}
