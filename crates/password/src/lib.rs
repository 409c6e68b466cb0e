//! rpost-password - Dovecot password schemes: SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID/ARGON2I, CRAM-MD5, PLAIN, CRYPT (skeleton: the work is in progress under issue 5)
