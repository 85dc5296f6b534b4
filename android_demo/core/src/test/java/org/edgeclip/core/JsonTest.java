package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {

    @Test
    void parsesValues() {
        Map<String, Object> m = Json.asObject(Json.parse(
                " {\"a\": 1, \"b\": -2.5e-3, \"c\": [true, false, null], \"d\": \"x\\n\\u00e9\\ud83d\\ude00\\\"\\\\\\/\","
                        + " \"e\": {}, \"f\": [], \"g\": 0.1, \"h\": 12345678901234567890, \"a\": 7} "), "test");
        assertEquals(Arrays.asList("a", "b", "c", "d", "e", "f", "g", "h"), Arrays.asList(m.keySet().toArray()));
        assertEquals(7L, m.get("a")); // a repeated key keeps the last value, as Python's json
        assertEquals(-2.5e-3, m.get("b"));
        assertEquals(Arrays.asList(true, false, null), m.get("c"));
        assertEquals("x\n\u00e9\uD83D\uDE00\"\\/", m.get("d"));
        assertTrue(((Map<?, ?>) m.get("e")).isEmpty());
        assertTrue(((List<?>) m.get("f")).isEmpty());
        assertEquals(0.1, m.get("g"));
        assertEquals(1.2345678901234567e19, m.get("h"));
        assertNull(Json.parse("null"));
        assertEquals(14.285714149475098, Json.parse("14.285714149475098"));
        assertEquals(Long.valueOf(0), Json.parse("0"));
        assertEquals(1e300, Json.parse("1E+300"));
    }

    @Test
    void rejectsInvalidJsonWithPosition() {
        String[] bad = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "+1", "NaN", "Infinity", "[1 2]",
            "{\"a\" 1}", "{a:1}", "'x'", "\"\\x\"", "\"a\nb\"", "\"\\u12G4\"", "tru", "[1] x", "// c\n1", "-"};
        for (String text : bad) {
            EdgeclipException e = assertThrows(EdgeclipException.class, () -> Json.parse(text), text);
            assertTrue(e.getMessage().startsWith("JSON error at line "), e.getMessage());
        }
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> Json.parse("{\n  \"a\": tru\n}"));
        assertTrue(e.getMessage().contains("line 2 column 8"), e.getMessage());
    }

    @Test
    void typedAccessNamesTheField() {
        Map<String, Object> m = Json.asObject(Json.parse("{\"n\": \"x\"}"), "m");
        EdgeclipException e = assertThrows(EdgeclipException.class, () -> Json.asLong(m.get("n"), "file.json n"));
        assertTrue(e.getMessage().contains("file.json n"), e.getMessage());
        e = assertThrows(EdgeclipException.class, () -> Json.require(m, "missing", "file.json"));
        assertTrue(e.getMessage().contains("missing field \"missing\""), e.getMessage());
    }

    @Test
    void writerRoundTrips() {
        Object value = Json.parse("{\"a\": [1, 2.5, \"\u00e9\\n\"], \"b\": {\"c\": null, \"d\": true}, \"e\": [], \"f\": {}}");
        String text = JsonWriter.write(value);
        assertEquals(value, Json.parse(text));
        assertTrue(text.contains("\\u00e9"), text);
        assertEquals("{\n  \"x\": [\n    1\n  ]\n}", JsonWriter.write(Json.parse("{\"x\":[1]}")));
        assertThrows(EdgeclipException.class, () -> JsonWriter.write(Double.NaN));
    }
}
