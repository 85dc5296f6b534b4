package org.edgeclip.core;

import java.util.List;
import java.util.Map;

/**
 * Writes Maps, Lists, Strings, Numbers, Booleans and null as strict JSON, indented by two
 * spaces like Python's {@code json.dumps(obj, indent=2)} (so records read alike whichever
 * side wrote them). Non-ASCII characters are escaped as \\uXXXX, as Python does by default.
 * NaN and infinities are refused: they are not JSON.
 */
public final class JsonWriter {
    private JsonWriter() {}

    /** {@code value} as indented JSON text (no trailing newline). */
    public static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(out, value, 0);
        return out.toString();
    }

    private static void write(StringBuilder out, Object value, int indent) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String) {
            writeString(out, (String) value);
        } else if (value instanceof Boolean) {
            out.append(((Boolean) value) ? "true" : "false");
        } else if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw new EdgeclipException("JSON cannot hold " + d);
            }
            // Double.toString gives the shortest text that reads back to the same double
            // (e.g. 1.0E-5), which is valid JSON.
            out.append(Double.toString(d));
        } else if (value instanceof Number) {
            out.append(((Number) value).longValue());
        } else if (value instanceof Map) {
            Map<?, ?> map = (Map<?, ?>) value;
            if (map.isEmpty()) {
                out.append("{}");
                return;
            }
            out.append("{");
            boolean first = true;
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                out.append(first ? "\n" : ",\n");
                first = false;
                indent(out, indent + 1);
                writeString(out, String.valueOf(entry.getKey()));
                out.append(": ");
                write(out, entry.getValue(), indent + 1);
            }
            out.append("\n");
            indent(out, indent);
            out.append("}");
        } else if (value instanceof List) {
            List<?> list = (List<?>) value;
            if (list.isEmpty()) {
                out.append("[]");
                return;
            }
            out.append("[");
            for (int i = 0; i < list.size(); i++) {
                out.append(i == 0 ? "\n" : ",\n");
                indent(out, indent + 1);
                write(out, list.get(i), indent + 1);
            }
            out.append("\n");
            indent(out, indent);
            out.append("]");
        } else {
            throw new EdgeclipException("cannot write a " + value.getClass().getName() + " as JSON");
        }
    }

    private static void indent(StringBuilder out, int level) {
        for (int i = 0; i < level; i++) {
            out.append("  ");
        }
    }

    private static void writeString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                case '\b': out.append("\\b"); break;
                case '\f': out.append("\\f"); break;
                default:
                    if (c < 0x20 || c > 0x7E) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
