//! rpost-auth-proto - Dovecot auth client and auth-userdb protocols, sans-IO (skeleton: the work is in progress under issue 5)
