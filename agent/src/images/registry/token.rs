//! Registry authentication: `WWW-Authenticate` challenges and the bearer token exchange of the
//! distribution token spec (GET with basic auth, or an OAuth2 refresh token POST).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::super::{Error, RegistryAuth};
use super::{MAX_TOKEN_BYTES, read_limited, transport_error};

/// `client_id` sent with OAuth2 token requests.
const CLIENT_ID: &str = "coldstart-agent";

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    /// Auth scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters, names lowercased, in header order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a `WWW-Authenticate` value into its challenges (RFC 7235: `scheme k=v, k="v", scheme2`).
pub(super) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let end = rest.find([' ', '\t', ',', '=']).unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start_matches([' ', '\t']);
        if token.is_empty() {
            break;
        }
        if let Some(value_start) = after.strip_prefix('=') {
            // A parameter of the current challenge (or a token68, which we keep as a param).
            let (value, remaining) = param_value(value_start.trim_start_matches([' ', '\t']));
            if let Some(current) = out.last_mut() {
                current.params.push((token.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    out
}

/// A parameter value (token or quoted string) and what follows it.
fn param_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (value, &quoted[i + 1..]),
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
        (s[..end].to_owned(), &s[end..])
    }
}

/// `Basic` header value for `(user, password)`.
pub(super) fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// What a token request needs besides the challenge.
pub(super) struct TokenRequest<'a> {
    /// The host's client (its TLS settings apply to the auth server too, as in containerd).
    pub http: &'a reqwest::Client,
    /// Headers configured for the host.
    pub headers: &'a [(String, String)],
    /// Credentials for the registry, if any.
    pub auth: Option<&'a RegistryAuth>,
    /// Scope asked for when the challenge names none.
    pub default_scope: String,
    /// Normalised image reference, for errors.
    pub image: &'a str,
}

/// Exchange a bearer challenge for a token.
pub(super) async fn fetch_token(
    req: &TokenRequest<'_>,
    challenge: &Challenge,
) -> Result<String, Error> {
    let realm = challenge
        .param("realm")
        .ok_or_else(|| Error::Registry("bearer challenge without realm".to_owned()))?;
    let realm = reqwest::Url::parse(realm)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| Error::Registry(format!("bearer challenge with invalid realm {realm:?}")))?;
    let service = challenge.param("service").unwrap_or_default();
    let scopes: Vec<&str> = match challenge.param("scope") {
        Some(scope) if !scope.is_empty() => scope.split(' ').filter(|s| !s.is_empty()).collect(),
        _ => vec![req.default_scope.as_str()],
    };
    let identity = req
        .auth
        .map(|a| a.identity_token.as_str())
        .unwrap_or_default();
    let mut resp = None;
    if !identity.is_empty() {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", identity),
            ("service", service),
            ("scope", &scopes.join(" ")),
            ("client_id", CLIENT_ID),
        ];
        let r = send(req, req.http.post(realm.clone()).form(&form), &realm).await?;
        // Servers without the OAuth2 endpoint answer 404 or 405: fall back to GET, as containerd.
        if !matches!(r.status().as_u16(), 404 | 405) {
            resp = Some(r);
        }
    }
    let resp = match resp {
        Some(r) => r,
        None => {
            let mut query = vec![("service", service)];
            query.extend(scopes.iter().map(|s| ("scope", *s)));
            if service.is_empty() {
                query.remove(0);
            }
            let mut builder = req.http.get(realm.clone()).query(&query);
            if let Some((user, password)) = req.auth.and_then(RegistryAuth::basic) {
                builder = builder.basic_auth(user, Some(password));
            }
            send(req, builder, &realm).await?
        }
    };
    let status = resp.status();
    if matches!(status.as_u16(), 401 | 403) {
        return Err(Error::Unauthorized {
            image: req.image.to_owned(),
            reason: format!("token server {} answered {status}", origin(&realm)),
        });
    }
    if !status.is_success() {
        return Err(Error::Registry(format!(
            "token server {} answered {status}",
            origin(&realm)
        )));
    }
    let body = read_limited(resp, MAX_TOKEN_BYTES)
        .await
        .map_err(|e| e.into_error(req.image, &origin(&realm)))?;
    token_from_body(&body)
}

fn token_from_body(body: &[u8]) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: String,
        #[serde(default)]
        access_token: String,
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| Error::Registry(format!("token response is not json: {e}")))?;
    [parsed.token, parsed.access_token]
        .into_iter()
        .find(|t| !t.is_empty())
        .ok_or_else(|| Error::Registry("token response holds no token".to_owned()))
}

async fn send(
    req: &TokenRequest<'_>,
    mut builder: reqwest::RequestBuilder,
    realm: &reqwest::Url,
) -> Result<reqwest::Response, Error> {
    for (name, value) in req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .send()
        .await
        .map_err(|e| transport_error(req.image, &origin(realm), &e))
}

fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}
