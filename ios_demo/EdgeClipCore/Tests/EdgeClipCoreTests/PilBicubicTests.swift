import Foundation
import XCTest
@testable import EdgeClipCore

/// Pillow's BICUBIC resize on small random images, against outputs of Pillow 13.0.0
/// (`Image.fromarray(a).resize((w, h), Image.BICUBIC)`), pasted as hex (HWC RGB bytes).
/// Cases: upscale both axes, downscale both, a tall image whose height shrinks much more than
/// its width (Pillow then runs the vertical pass first), height only, width only.
final class PilBicubicTests: XCTestCase {
    // (in width, in height, out width, out height, input hex, Pillow's output hex)
    static let CASES: [(Int, Int, Int, Int, String, String)] = [
        (5, 4, 7, 9, "8b4ae5f1a94106a0956a26afbccdafe562f90a945f5693c642276ad5ab2da7394551370e99b2d74c3427fa48d732a1df70aca1e926115901dd06f27f",
         "7b41edde8082ceb34500a1904637ae9768bbbedabc9247f3c78188a8af4e0e9e9a4437a89366a5c4d49ecc57ff8f849c4ca8633296b23f359a87626fd0c851f35ef9637b980b986e5a94c83e3885815847e0ae2cde479b674f5127755778aade464b6190434dff7083b2384a722f195a594095b4db52564a963466ff48dd765f78645d53796851bd7d8b69366d6c468e9e89c63c94cf51a1b191866ee13628800aa23763b71ee98822aaf24abcd69b9279f119008a00b7216ec900ff70"),
        (13, 11, 4, 3, "8f063cd25e19a621f9bd0ccc21397c1ec795ca7748dc03d17a88934d85527357a2e64647f03e2fb81f223f4192c58efd5185f0711ef7677a1f132a818d882195a100b28d6b236b82481bd9fe630dc3ce3be4ebcab72f45b35223479f6e794d57037e2cfde9e15a7789781e3721a557d8e5a703296dcb81db3f65cf9c1bdc5d1d8fc83f0b0bb4db71be572209851d3d24f4c0cf83fe4363f82f4759778955f6ced681cbea7179ced2c8f814a13472ff70ce369d8385452a44f318337f08cd1e614f235d3f83bc45fee9ee0403a79be118544441317c9311f85e0429b19f7ec0e156f65a3322e791b880ee995e3f0d307d2fbaf400693a179e0d027ed4e58be7a9ebc28a271d43a78855638144eb6603f7b2725de11fe6ac2f88a68182869793f0aad6ded8116e3ab51681c4a374fec70a68b3e4bdc92b387987416c17ec90963ec766888ab4b80eba7c5cfd81121bea9cee1810dfd5169faf26cd7b5c30c8aba44d972299e8c7b41b9a1d2b0f180600a974d63b6332202c998e82b2522c49c4394c7d73265b6aaf61b288fbd0aecfa766616223611e764c93aa388ffabd0a6a6412b209971e2d827076f7e49ab8",
         "a862936c6582777a66807566728c9e757a858282716ea070698d96777361977c54718b80"),
        (6, 40, 5, 10, "71be53a3442b128cdad72bad0f8aeef42a0b9a26d74fc78f2562b8701097a55b5510543d27ed600de3200a6749307fd37899c118819af6674394c3f7aa5f93f32c810a37ca7bf1013ccdf8ab8ab4a6039954e84cbe3b3f7f1183c3df8375c517b4e786a9aadf7488f892b12191387ad86aca56d8531c927b931fe8f16e795b9b331767e712dbe8f5331dd9917f01e64710dd3c25f4d21690a049453135550ec0193a8bed1783d53ec944658d1d28960c44b0382e93438e60788d51e279a131f8130b3ea4bd2f5d95e57bd791436d840f4e6654608135bbfb885d346959a49b36402a4f3dcc489fb6511fbe09e5d72bf834e04fe028ca4991e02abd77279fedc206d2318ca8b8287a6f4b795209575d7277d456c0f6e81a0e584d730660f56bb8b588475f7066c1cd7109c5079a933ee857db751ff223726ad90697f749f7c61bd80163a8c9a356ba91d79f6d24ee3a14ebd41386d8faef6e9e6c70df41dba9aeb5301e5824b7db0e504f1d970686934768f005af0d5a23ddb465fc5a489b43e76ea3e384969be487a440e7c3ea5204cabbf9bfe8e648caff7704ac26d227a069c392f4eeb361c24ef366530178b479933822c3c0cf6b3cbeb4af7ecff21cd3a408f80223e393ddd808453d6bad90efd8aba2b4d096226df8d446a703fcb2bdddd8e1e2a09a633f7c349903cb463dc4f3ea335483e56f64168344d1b96b410c3bade3f6390f4a62312e48d232ddc3f3e848e3f55cb7e22d1bad8ded2dd7fb1065837b97585cae654f2c42b8f27265d7ddd7eec5923eb486fc6bb30e571a96372332a38245e6a7dc162ddcb8f3d54a0f38ee52c9719952c3338026fbfa0adf76282c4bf9838c2557f3b7246b852bab20e604ae83e5385d98c4690126be98f09c9384aaa5945fc3d3d4e1e6386dbe5b1df267ebd0e0f0a3d85f5fa461698f35e2b6b9f839ecdb83b5184e549711f50a853f3b46146e3201a92959ecfe84886a928a82af70f39304ebbe937c4140821f57c9",
         "7d9d8457997b6951a07161a95c705480a37e7aa1a17a9a7c8b64958d7d5c6a9e6a5aaa92655e746930598374538056b59e679e6d7a64734a8f7e64889b6a89866e92b075619b6951919498b65d6e9a93d286a2b38255897ea27d674b9e988ea27189a2b0a3b7937196b098928a919b948e9861638275794094987373a466b36ab29a637f879d6da1757a558f8680b37096929d6c7c85"),
        (9, 9, 9, 4, "e09458ce1d9b09ae70372dad1acf5c4f1bf192b701b682225ceb2ea1b0b2cbebdc33b8f80cbf564cb39c2a558b53769e1763f565d2e329bb4b06f233bc2f422be3f0fa0cdd682f78c6268136c5d5ae4ceedf5bea752175d0b84d15d704b6df97679fc61c2a4527bf1f43919a9622a5e8199fac7ab4b3532c86443d981aafc374303fc6a86bd92e60843c814ee9b10320c6161bf6355049c1e34a41772dc9023cb637cba025aa8269e52e9ea289eb1d172060132f2a6828bc7b69d60faba177ada22a5969596dd200d37997c3cacb25b30760b2d073813de54e93e0ba771450d7f0fffa1c917d1febcb9fd1e915b4afb1e84452",
         "a2ac7aa6a3a4379ba21e8f9957a1924137ae80815e5b7e9f70c2a3906cad6f6a72bd80683fbf4fc4799b7060a9793a5b27c1836a939f967152ab47b1c02c68b83c639236416666995b514d61b245728a5d898da8ac5a3d7483aadc7c966f7767c6ad51a57038bab38abc31a6"),
        (3, 7, 8, 7, "854fc5bda361b0e0de99ade3ce42f785840dfed0781567ea9662124cac66f10b559b922b4f02c1072c033e6f0ad92c0534f84a42b572b5404d84ebb4c644a2",
         "7f46cf8752c19c6d97b59369beb16eb8cca8b1ded9afe6eb94b8e19ba9e4b27ff7ca4effc646d5a4656a8881157e8b00ffdb6cf5cc7c9ca7b03177e61a60d0575f6d91621aa361003bbc6852a665916661dd1b5aee164ec5553b9e8d2c92a0275600d44c03ba300f760f221f0b39002557003c6d0944760bea1700d3330797801e4cdd3d2cfa5434da6641b87143ae76ba2f43b346519e8c7787dba58bdcb8a98faec44aa3cd33a0"),
    ]

    func testMatchesPillow() throws {
        for (w, h, nw, nh, input, output) in PilBicubicTests.CASES {
            let out = try PilBicubic.resize(RgbImage(width: w, height: h, rgb: PilBicubicTests.unhex(input)), nw, nh)
            let expected = PilBicubicTests.unhex(output)
            XCTAssertEqual(nw, out.width)
            XCTAssertEqual(nh, out.height)
            var differ = 0
            var maxDiff = 0
            for i in 0..<expected.count {
                let d = abs(Int(expected[i]) - Int(out.rgb[i]))
                if d != 0 {
                    differ += 1
                    maxDiff = max(maxDiff, d)
                }
            }
            if differ != 0 {
                XCTFail("\(w)x\(h) -> \(nw)x\(nh): \(differ) values differ from Pillow, by up to \(maxDiff)")
            }
        }
    }

    func testKernelAndRounding() {
        XCTAssertEqual(1.0, PilBicubic.bicubic(0.0))
        XCTAssertEqual(0.0, PilBicubic.bicubic(2.0))
        XCTAssertEqual(0.5625, PilBicubic.bicubic(0.5)) // ((1.5 * 0.5 - 2.5) * 0.25) + 1
        XCTAssertEqual(-0.0625, PilBicubic.bicubic(-1.5))
        XCTAssertEqual(0, PilBicubic.clip8(-5 << PilBicubic.PRECISION_BITS))
        XCTAssertEqual(255, PilBicubic.clip8(300 << PilBicubic.PRECISION_BITS))
        XCTAssertEqual(7, PilBicubic.clip8((7 << PilBicubic.PRECISION_BITS) + 12345))
    }

    func testCropOffsetsRoundHalfToEven() {
        // Python: round(d / 2)
        let d = [0, 1, 2, 3, 5, 17, 19, 20]
        let expected = [0, 0, 1, 2, 2, 8, 10, 10]
        for i in 0..<d.count {
            XCTAssertEqual(expected[i], ImagePreprocessor.roundHalfEven(d[i]), "round(\(d[i]) / 2)")
        }
    }

    static func unhex(_ hex: String) -> [UInt8] {
        let chars = Array(hex.utf8)
        var out = [UInt8](repeating: 0, count: chars.count / 2)
        for i in 0..<out.count {
            out[i] = UInt8(String(decoding: chars[(2 * i)..<(2 * i + 2)], as: UTF8.self), radix: 16)!
        }
        return out
    }
}
