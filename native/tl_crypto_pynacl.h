/* Crypto adapter for the CPython build: binds to the libsodium inside PyNaCl at run time.
 *
 * Why a function table and not RTLD_GLOBAL: PyNaCl's nacl/_sodium*.so exports every libsodium
 * symbol, but it is loaded RTLD_LOCAL. Re-opening it RTLD_GLOBAL and leaving our symbols
 * undefined would make the dynamic loader resolve them against whichever libsodium happens to
 * be global first (a system libsodium another extension pulled in, of another ABI), would need
 * platform-specific link flags (-undefined dynamic_lookup on macOS), and would turn a missing
 * symbol into a crash at first call instead of a clean ImportError. With a table, the binding
 * takes each address from PyNaCl's own module (ctypes), hands them over once at import, this
 * file checks every one and the HMAC state size, and the core calls exactly PyNaCl's code. The
 * cost is one indirect call per primitive. No sodium.h is needed to build it.
 */
#ifndef TL_CRYPTO_PYNACL_H
#define TL_CRYPTO_PYNACL_H

#include <stdint.h>

#define TL_PYNACL_NFUNCS 17

/* The libsodium symbol names, in the order tl_crypto_pynacl_bind() expects their addresses. */
extern const char *const tl_pynacl_names[TL_PYNACL_NFUNCS];

/* Install the addresses (in tl_pynacl_names order) and run sodium_init().
 * Returns TL_OK, or TL_E_CRYPTO (and stays unbound) if any is 0 or the state does not fit. */
int tl_crypto_pynacl_bind(const uintptr_t addrs[TL_PYNACL_NFUNCS]);

#endif
