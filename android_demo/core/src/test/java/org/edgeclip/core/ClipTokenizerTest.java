package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Requirement 1: every caption the Python side tokenized gets exactly the same ids here. */
class ClipTokenizerTest {
    private static ExportFolder folder;

    @BeforeAll
    static void load() {
        folder = ExportFolder.open(Fixtures.export());
    }

    @Test
    void goldenCaptions() {
        List<Object> captions = Json.asList(Fixtures.golden().get("captions"), "golden.json captions");
        assertTrue(captions.size() > 0, "golden.json has no captions");
        check(folder.tokenizer(), captions, "golden.json");
    }

    @Test
    void captionsJson() {
        Map<String, Object> file = Json.asObject(
                Json.parse(new File(Fixtures.dir(), "captions.json")), "captions.json");
        // captions.json may use another context length than the tiny model's (open_clip's 77,
        // so that BPE rather than truncation decides the ids): same vocabulary, its length.
        int contextLength = Json.asInt(file.get("context_length"), "captions.json context_length");
        Manifest.TokenizerSpec spec = folder.text.tokenizer;
        ClipTokenizer tokenizer = ClipTokenizer.fromVocab(folder.vocabFile(), contextLength, spec.sotId, spec.eotId);
        List<Object> captions = Json.asList(file.get("captions"), "captions.json captions");
        assertTrue(captions.size() >= 1000, "captions.json has only " + captions.size() + " captions");
        check(tokenizer, captions, "captions.json");
    }

    private static void check(ClipTokenizer tokenizer, List<Object> captions, String source) {
        List<String> mismatches = new ArrayList<>();
        for (Object item : captions) {
            Map<String, Object> caption = Json.asObject(item, source);
            String text = Json.asString(caption.get("text"), source + " text");
            long[] expected = Json.asLongArray(caption.get("ids"), source + " ids");
            long[] actual = tokenizer.tokenize(text);
            if (!Arrays.equals(expected, actual)) {
                mismatches.add(Fixtures.escape(text) + "\n    python " + Arrays.toString(expected)
                        + "\n    java   " + Arrays.toString(actual)
                        + "\n    cleaned " + Fixtures.escape(TextCleaner.clean(text)));
            }
        }
        if (!mismatches.isEmpty()) {
            fail(mismatches.size() + " of " + captions.size() + " " + source + " captions tokenize differently:\n  "
                    + String.join("\n  ", mismatches.subList(0, Math.min(20, mismatches.size()))));
        }
    }
}
