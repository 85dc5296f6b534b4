package org.edgeclip.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Requirement 3: zero-shot scores and ranking from the stored embeddings match Python's. */
class ZeroShotTest {

    @Test
    void scoresAndRanking() {
        Map<String, Object> golden = Fixtures.golden();
        ExportFolder folder = ExportFolder.open(Fixtures.export());
        ClipTokenizer tokenizer = folder.tokenizer();

        // The text "tower" is the stored Python embeddings, looked up by prompt text; the
        // stub also checks that the ids it is given are the ones Python embedded.
        final Map<String, float[]> embeddingByText = new HashMap<>();
        final Map<String, long[]> idsByText = new HashMap<>();
        for (Object item : Json.asList(golden.get("captions"), "captions")) {
            Map<String, Object> c = Json.asObject(item, "caption");
            String text = Json.asString(c.get("text"), "text");
            embeddingByText.put(text, Json.asFloatArray(c.get("embedding"), "embedding"));
            idsByText.put(text, Json.asLongArray(c.get("ids"), "ids"));
        }
        Map<String, Object> zs = Json.asObject(golden.get("zero_shot"), "zero_shot");
        List<String> labels = strings(zs.get("labels"));
        List<String> templates = strings(zs.get("templates"));
        double logitScale = Json.asDouble(zs.get("logit_scale"), "logit_scale");
        assertEquals(logitScale, folder.logitScale(), 1e-6 * logitScale, "manifest logit_scale vs golden");

        final Map<String, float[]> embeddingByIds = new HashMap<>();
        for (Map.Entry<String, long[]> e : idsByText.entrySet()) {
            embeddingByIds.put(Arrays.toString(e.getValue()), embeddingByText.get(e.getKey()));
        }
        for (String label : labels) {
            for (String template : templates) {
                String prompt = ZeroShot.formatPrompt(template, label);
                assertTrue(embeddingByText.containsKey(prompt), "golden.json has no caption for prompt \"" + prompt + "\"");
            }
        }
        ZeroShot.TextEncoder stored = new ZeroShot.TextEncoder() {
            @Override
            public float[] embed(long[] tokens) {
                float[] e = embeddingByIds.get(Arrays.toString(tokens));
                if (e == null) {
                    fail("no stored embedding for token ids " + Arrays.toString(tokens));
                }
                return e;
            }
        };
        ZeroShot classifier = ZeroShot.build(labels, templates, tokenizer, stored, logitScale);
        float[] image = Json.asFloatArray(golden.get("image_embedding"), "image_embedding");
        float[] scores = classifier.scores(image);
        double[] expected = Json.asDoubleArray(zs.get("scores"), "scores");
        assertEquals(expected.length, scores.length);
        for (int i = 0; i < scores.length; i++) {
            double tolerance = 1e-4 * Math.max(Math.abs(expected[i]), 1e-3);
            assertEquals(expected[i], scores[i], tolerance, "score of \"" + labels.get(i) + "\"");
        }
        long[] expectedRanking = Json.asLongArray(zs.get("ranking"), "ranking");
        int[] ranking = ZeroShot.ranking(scores);
        long[] actualRanking = new long[ranking.length];
        for (int i = 0; i < ranking.length; i++) {
            actualRanking[i] = ranking[i];
        }
        assertArrayEquals(expectedRanking, actualRanking, "ranking, best first");

        List<ZeroShot.Prediction> top = classifier.topK(image, 3);
        assertEquals(Math.min(3, labels.size()), top.size());
        assertEquals(labels.get((int) expectedRanking[0]), top.get(0).label);
        double total = 0;
        for (double p : ZeroShot.softmax(scores)) {
            total += p;
        }
        assertEquals(1.0, total, 1e-9);
    }

    @Test
    void rankingIsStableAndNormalisationMatchesTorch() {
        assertArrayEquals(new int[] {1, 3, 0, 2}, ZeroShot.ranking(new float[] {1f, 2f, 0.5f, 2f}));
        assertArrayEquals(new float[] {0.6f, 0.8f}, ZeroShot.l2Normalize(new float[] {3f, 4f}), 1e-7f);
        assertArrayEquals(new float[] {0f, 0f}, ZeroShot.l2Normalize(new float[] {0f, 0f}));
        // mean of normalised prompts, normalised again: (1,0) and (0,2) -> (1,1)/sqrt(2)
        float[] c = ZeroShot.averagePrompts(Arrays.asList(new float[] {1f, 0f}, new float[] {0f, 2f}));
        assertArrayEquals(new float[] {0.70710677f, 0.70710677f}, c, 1e-7f);
        assertEquals("a photo of a cat, a cat.", ZeroShot.formatPrompt("a photo of a {}, a {}.", "cat"));
        double[] p = ZeroShot.softmax(new float[] {0f, (float) Math.log(3)});
        assertEquals(0.25, p[0], 1e-7);
    }

    private static List<String> strings(Object value) {
        List<String> out = new ArrayList<>();
        for (Object o : Json.asList(value, "strings")) {
            out.add(Json.asString(o, "string"));
        }
        return out;
    }
}
