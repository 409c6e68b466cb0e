//! rpost-tls - TLS for rpost daemons: rustls configurations from Postfix/Dovecot parameters, self-signed certificates (skeleton: the work is in progress under issue 5)
