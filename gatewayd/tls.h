#ifndef GW_TLS_H
#define GW_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/*
 * TLS for listeners: a server SSL_CTX with modern defaults (TLS 1.2 and later, no weak
 * ciphers, server cipher preference, no renegotiation, no compression).
 */

/* Returns a new context owned by the caller, or NULL with err filled (bad file, key
 * not matching the certificate, ...). */
SSL_CTX *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);

#endif
