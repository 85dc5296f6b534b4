package org.edgeclip.core;

/**
 * Anything wrong with an export folder or with what the app feeds the core: a missing or
 * tampered file, a manifest this code does not understand, a preprocessing it does not
 * implement. The message is one line that names the file (where there is one) and what was
 * expected, so an app can show it as is.
 */
public class EdgeclipException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public EdgeclipException(String message) {
        super(message);
    }

    public EdgeclipException(String message, Throwable cause) {
        super(message, cause);
    }
}
