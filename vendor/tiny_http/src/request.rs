use std::io::{self, Cursor, Read};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::{Body, Shared};
use crate::{HTTPVersion, Header, Method, Response};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// (pizza-api patch) The body has been read completely by the connection's
/// thread before the request is handed out, so reading it never blocks, and
/// the response is written without blocking the caller (see `client.rs`).
///
/// # Dropping
///
/// If a `Request` object is dropped without `respond` being called, an answer
/// with status 500 is sent and the connection closes.
pub struct Request {
    // the whole body, read by the connection thread
    data_reader: Cursor<Vec<u8>>,

    // the body's share of the server's body budget, released on drop
    _body: Body,

    // where the response goes; `None` once answered
    connection: Option<Arc<Shared>>,

    // the connection ends after this request's response
    close_after: bool,

    remote_addr: Option<SocketAddr>,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,
}

/// Builds a new request from what the connection thread read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_request(
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut body: Body,
    connection: Arc<Shared>,
    close_after: bool,
) -> Request {
    let data = std::mem::take(&mut body.data);
    let body_length = if data.is_empty() { None } else { Some(data.len()) };
    Request {
        data_reader: Cursor::new(data),
        _body: body,
        connection: Some(connection),
        close_after,
        remote_addr,
        method,
        path,
        http_version: version,
        headers,
        body_length,
    }
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        false
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes, when there is one.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// (pizza-api patch) Takes the header fields as (name, value) strings
    /// without a copy; the request has none afterwards.
    pub fn take_headers(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.headers).into_iter().map(|h| (h.field.into_string(), h.value.into())).collect()
    }

    /// (pizza-api patch) Takes the body (already in memory) without a copy;
    /// the request's reader is empty afterwards.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(self.data_reader.get_mut())
    }

    /// Allows to read the body of the request (already in memory).
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        &mut self.data_reader
    }

    /// Sends a response to this request.
    ///
    /// (pizza-api patch) A response carrying `Connection: close` really
    /// closes the connection after it is sent.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), io::Error>
    where
        R: Read,
    {
        self.respond_impl(response)
    }

    fn respond_impl<R>(&mut self, mut response: Response<R>) -> Result<(), io::Error>
    where
        R: Read,
    {
        let Some(connection) = self.connection.take() else { return Ok(()) };
        let close = self.close_after || response.closes_connection();
        response.set_connection_header(if close {
            Some("close")
        } else if self.http_version == (1, 0) {
            Some("keep-alive")
        } else {
            None
        });
        let delay = response.delay();
        let mut bytes = Vec::with_capacity(256 + response.data_length().unwrap_or(0));
        let result = response.raw_print(
            &mut bytes,
            self.http_version.clone(),
            &self.headers,
            self.method == Method::Head,
            None,
        );
        match result {
            Ok(()) => match delay {
                Some(delay) => {
                    connection.send_response_later(bytes, close, delay);
                    Ok(())
                }
                None => Self::ignore_client_closing_errors(connection.send_response(bytes, close)),
            },
            Err(err) => {
                // The response's own reader failed: nothing usable to send.
                connection.send_response(Vec::new(), true)?;
                Err(err)
            }
        }
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            io::ErrorKind::BrokenPipe => Ok(()),
            io::ErrorKind::ConnectionAborted => Ok(()),
            io::ErrorKind::ConnectionRefused => Ok(()),
            io::ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(formatter, "Request({} {} from {:?})", self.method, self.path, self.remote_addr)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.connection.is_some() {
            let body = br#"{"error":"Internal server error"}"#.to_vec();
            let length = body.len();
            let response = Response::new(
                crate::StatusCode(500),
                vec![Header::from_bytes(&b"Content-Type"[..], &b"application/json; charset=utf-8"[..])
                    .expect("a valid header")],
                Cursor::new(body),
                Some(length),
                None,
            )
            .with_header(Header::from_bytes(&b"Connection"[..], &b"close"[..]).expect("a valid header"));
            let _ = self.respond_impl(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
