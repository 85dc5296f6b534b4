package org.edgeclip.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A minimal, strict JSON reader (RFC 8259), so the core needs no third-party library.
 *
 * <p>Values map to: object → {@code Map<String, Object>} (a LinkedHashMap, keys in file order;
 * a repeated key keeps the last value, as Python's json does), array → {@code List<Object>},
 * string → String, number → Long when written without fraction or exponent and within long's
 * range, else Double, true/false → Boolean, null → null. NaN and Infinity are refused, as are
 * trailing commas, comments and anything after the top-level value. Errors are an
 * {@link EdgeclipException} naming the line, column and offset.
 *
 * <p>Numbers go through {@link Double#parseDouble}, which rounds correctly, so a float that
 * Python wrote with repr() comes back bit-identical.
 */
public final class Json {
    private final String text;
    private int pos;

    private Json(String text) {
        this.text = text;
    }

    /** Parses one JSON document. */
    public static Object parse(String text) {
        Json parser = new Json(text);
        parser.skipWhitespace();
        Object value = parser.readValue();
        parser.skipWhitespace();
        if (parser.pos != text.length()) {
            throw parser.error("unexpected text after the JSON value");
        }
        return value;
    }

    /** Parses a UTF-8 JSON file; errors name the file. */
    public static Object parse(File file) {
        String text;
        try {
            text = new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new EdgeclipException(file + ": cannot read (" + e.getMessage() + ")", e);
        }
        try {
            return parse(text);
        } catch (EdgeclipException e) {
            throw new EdgeclipException(file + ": " + e.getMessage(), e);
        }
    }

    // ---- typed access, for readers of manifests and golden files -------------------------

    /** {@code value} as an object, or an error naming {@code where}. */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> asObject(Object value, String where) {
        if (!(value instanceof Map)) {
            throw new EdgeclipException(where + ": expected a JSON object, got " + describe(value));
        }
        return (Map<String, Object>) value;
    }

    /** {@code value} as an array, or an error naming {@code where}. */
    @SuppressWarnings("unchecked")
    public static List<Object> asList(Object value, String where) {
        if (!(value instanceof List)) {
            throw new EdgeclipException(where + ": expected a JSON array, got " + describe(value));
        }
        return (List<Object>) value;
    }

    /** {@code value} as a string, or an error naming {@code where}. */
    public static String asString(Object value, String where) {
        if (!(value instanceof String)) {
            throw new EdgeclipException(where + ": expected a string, got " + describe(value));
        }
        return (String) value;
    }

    /** {@code value} as a double (any JSON number), or an error naming {@code where}. */
    public static double asDouble(Object value, String where) {
        if (!(value instanceof Number)) {
            throw new EdgeclipException(where + ": expected a number, got " + describe(value));
        }
        return ((Number) value).doubleValue();
    }

    /** {@code value} as a long (a JSON integer), or an error naming {@code where}. */
    public static long asLong(Object value, String where) {
        if (!(value instanceof Long)) {
            throw new EdgeclipException(where + ": expected an integer, got " + describe(value));
        }
        return (Long) value;
    }

    /** {@code value} as an int (a JSON integer in int range), or an error naming {@code where}. */
    public static int asInt(Object value, String where) {
        long v = asLong(value, where);
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
            throw new EdgeclipException(where + ": integer " + v + " out of range");
        }
        return (int) v;
    }

    /** A member of an object that must be there. */
    public static Object require(Map<String, Object> object, String key, String where) {
        if (!object.containsKey(key)) {
            throw new EdgeclipException(where + ": missing field \"" + key + "\"");
        }
        return object.get(key);
    }

    /** A JSON array of numbers as float[] (e.g. an embedding). */
    public static float[] asFloatArray(Object value, String where) {
        List<Object> list = asList(value, where);
        float[] out = new float[list.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) asDouble(list.get(i), where + "[" + i + "]");
        }
        return out;
    }

    /** A JSON array of numbers as double[]. */
    public static double[] asDoubleArray(Object value, String where) {
        List<Object> list = asList(value, where);
        double[] out = new double[list.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = asDouble(list.get(i), where + "[" + i + "]");
        }
        return out;
    }

    /** A JSON array of integers as long[] (e.g. token ids, a shape). */
    public static long[] asLongArray(Object value, String where) {
        List<Object> list = asList(value, where);
        long[] out = new long[list.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = asLong(list.get(i), where + "[" + i + "]");
        }
        return out;
    }

    private static String describe(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Map) {
            return "an object";
        }
        if (value instanceof List) {
            return "an array";
        }
        if (value instanceof String) {
            return "the string \"" + value + "\"";
        }
        return value.getClass().getSimpleName().toLowerCase() + " " + value;
    }

    // ---- the parser --------------------------------------------------------------------

    private Object readValue() {
        if (pos >= text.length()) {
            throw error("unexpected end of input, expected a value");
        }
        char c = text.charAt(pos);
        switch (c) {
            case '{':
                return readObject();
            case '[':
                return readArray();
            case '"':
                return readString();
            case 't':
                expectWord("true");
                return Boolean.TRUE;
            case 'f':
                expectWord("false");
                return Boolean.FALSE;
            case 'n':
                expectWord("null");
                return null;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    return readNumber();
                }
                throw error("unexpected character '" + c + "', expected a value");
        }
    }

    private Map<String, Object> readObject() {
        Map<String, Object> object = new LinkedHashMap<>();
        pos++; // '{'
        skipWhitespace();
        if (peek() == '}') {
            pos++;
            return object;
        }
        while (true) {
            skipWhitespace();
            if (peek() != '"') {
                throw error("expected a string key");
            }
            String key = readString();
            skipWhitespace();
            if (peek() != ':') {
                throw error("expected ':' after an object key");
            }
            pos++;
            skipWhitespace();
            object.put(key, readValue());
            skipWhitespace();
            char c = peek();
            pos++;
            if (c == '}') {
                return object;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or '}' in an object");
            }
        }
    }

    private List<Object> readArray() {
        List<Object> list = new ArrayList<>();
        pos++; // '['
        skipWhitespace();
        if (peek() == ']') {
            pos++;
            return list;
        }
        while (true) {
            skipWhitespace();
            list.add(readValue());
            skipWhitespace();
            char c = peek();
            pos++;
            if (c == ']') {
                return list;
            }
            if (c != ',') {
                pos--;
                throw error("expected ',' or ']' in an array");
            }
        }
    }

    private String readString() {
        pos++; // opening quote
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("unterminated string");
            }
            char c = text.charAt(pos++);
            if (c == '"') {
                return out.toString();
            }
            if (c < 0x20) {
                pos--;
                throw error("control character in a string (must be escaped)");
            }
            if (c != '\\') {
                out.append(c);
                continue;
            }
            if (pos >= text.length()) {
                throw error("unterminated escape");
            }
            char e = text.charAt(pos++);
            switch (e) {
                case '"': out.append('"'); break;
                case '\\': out.append('\\'); break;
                case '/': out.append('/'); break;
                case 'b': out.append('\b'); break;
                case 'f': out.append('\f'); break;
                case 'n': out.append('\n'); break;
                case 'r': out.append('\r'); break;
                case 't': out.append('\t'); break;
                case 'u':
                    // \\uXXXX is one UTF-16 unit; a surrogate pair arrives as two escapes and
                    // simply lands as two units, which is how Java strings hold it.
                    if (pos + 4 > text.length()) {
                        throw error("truncated \\u escape");
                    }
                    int code = 0;
                    for (int i = 0; i < 4; i++) {
                        int digit = Character.digit(text.charAt(pos + i), 16);
                        if (digit < 0 || text.charAt(pos + i) > 'f') {
                            throw error("bad hex digit in a \\u escape");
                        }
                        code = code * 16 + digit;
                    }
                    pos += 4;
                    out.append((char) code);
                    break;
                default:
                    pos--;
                    throw error("bad escape '\\" + e + "'");
            }
        }
    }

    private Object readNumber() {
        int start = pos;
        boolean integer = true;
        if (peek() == '-') {
            pos++;
        }
        if (peek() == '0') {
            pos++;
        } else if (isDigit(peek())) {
            while (isDigit(peek())) {
                pos++;
            }
        } else {
            throw error("expected a digit");
        }
        if (peek() == '.') {
            integer = false;
            pos++;
            if (!isDigit(peek())) {
                throw error("expected a digit after '.'");
            }
            while (isDigit(peek())) {
                pos++;
            }
        }
        if (peek() == 'e' || peek() == 'E') {
            integer = false;
            pos++;
            if (peek() == '+' || peek() == '-') {
                pos++;
            }
            if (!isDigit(peek())) {
                throw error("expected a digit in the exponent");
            }
            while (isDigit(peek())) {
                pos++;
            }
        }
        String number = text.substring(start, pos);
        if (integer) {
            try {
                return Long.parseLong(number);
            } catch (NumberFormatException tooBig) {
                return Double.parseDouble(number); // beyond long: keep it as a double
            }
        }
        return Double.parseDouble(number);
    }

    private void expectWord(String word) {
        if (!text.startsWith(word, pos)) {
            throw error("unexpected word, expected " + word);
        }
        pos += word.length();
    }

    private void skipWhitespace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    /** The current character, or 0 at the end (never valid JSON there). */
    private char peek() {
        return pos < text.length() ? text.charAt(pos) : '\0';
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    private EdgeclipException error(String message) {
        int line = 1;
        int column = 1;
        for (int i = 0; i < pos && i < text.length(); i++) {
            if (text.charAt(i) == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
        return new EdgeclipException(
                "JSON error at line " + line + " column " + column + " (offset " + pos + "): " + message);
    }
}
